"""The simulated kubelet (`dpctl sim-kubelet`): one process that plays N GPU nodes of the local cluster.

It registers Nodes and keeps them healthy, runs the containers of the Pods bound to them as local
processes (or refuses images it has no program for, like an image pull error), allocates loopback
pod IPs and simulated GPUs, reports Pod status as a kubelet does, and serves container logs on each
node's kubelet endpoint. Modules, one job each:

- ``main``: the command line (serve, and ``ctl``)
- ``kubelet``: wires the parts together and runs them; what the state dir keeps
- ``nodes``, ``leases``: Node registration/status and heartbeats
- ``podsync``: the per-Pod sync loop, which runs its steps in order:
  ``admission``, the sandbox, ``lifecycle`` (containers, restarts) and ``probing``,
  ``statussync``, ``termination``, and ``recovery`` after a restart (pure)
- ``podrecord``: what the kubelet remembers per Pod; ``launcher``: starting one container
- ``resources``: the GPUs and IPs pods hold, kept in step with ``allocations.json``
- ``containers``, ``status``: a container's lifecycle and the Pod status a kubelet would write
- ``images``, ``env``: what program a container runs and with which environment
- ``devices``, ``ips``, ``allocations``: GPU and IP allocation and their persistence
- ``runtime``, ``logfiles``: processes and their CRI-format log files
- ``probes``: readiness, liveness and startup probes
- ``tokens``: ServiceAccount tokens and per-pod kubeconfigs
- ``events``: the Events ``kubectl describe pod`` shows
- ``logserver``: the kubelet HTTPS endpoint (``/containerLogs``, ``/healthz``)
- ``admin``, ``ctl``: the admin HTTP API that makes nodes NotReady, Ready, removed or added, and
  its client
"""
