"""The dual-pods logic: reconcile each inference server's requester and runner Pods."""
