"""The embedded local cluster: control plane, simulated kubelet and simulated node tools.

- ``controlplane``: etcd, kube-apiserver, kube-controller-manager, kube-scheduler as child processes
- ``cluster``: the control plane plus the simulated kubelet; what "Ready" means
- ``main``: ``dpctl local-cluster up|down|status|env`` and the supervisor behind it
- ``pki``: the CA and every certificate (``issue_serving_cert`` for the kubelet)
- ``procs``: child processes without orphans (PDEATHSIG, process groups, pid files)
- ``bins``: where the binaries are (``$DPCTL_BINS`` or ``hack/bins/build.sh``'s cache)
- ``kubehttp``: the small HTTP client the above use for health checks and setup
- ``kubelet/``, ``nvidiasmi``: the simulated kubelet and nvidia-smi
"""
