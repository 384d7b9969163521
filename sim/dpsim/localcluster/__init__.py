"""The embedded local cluster: the control plane, and the simulated kubelet started beside it.

- ``controlplane``: etcd, kube-apiserver, kube-controller-manager, kube-scheduler as child processes
- ``cluster``: the control plane plus the simulated kubelet; what "Ready" means
- ``main``: ``dpctl local-cluster up|down|status|env`` and the supervisor behind it
- ``pki``: the CA and every certificate (``issue_serving_cert`` for the kubelet)
- ``procs``: child processes without orphans (PDEATHSIG, process groups, pid files)
- ``bins``: where the binaries are (``$DPCTL_BINS`` or ``hack/bins/build.sh``'s cache)
- ``kubehttp``: the small HTTP client the above use for health checks and setup

The simulated kubelet itself is ``dpsim.kubelet``, nvidia-smi ``dpsim.nvidiasmi``.
"""
