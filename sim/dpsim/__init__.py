"""The simulated cluster dpctl is developed and tested on; never installed on a real cluster.

A distribution of its own (``dpctl-sim``, ``sim/pyproject.toml``), installed next to dpctl by
``make dev`` and absent from the dpctl wheel and the images. It may import dpctl; dpctl never
imports it. Its subcommands reach the one `dpctl` command line through the entry points that
``commands`` names (see ``dpctl.cli``).

- ``localcluster/``: the control plane (etcd, kube-apiserver, kcm, scheduler), PKI, binaries,
  `dpctl local-cluster`
- ``kubelet/``: the simulated kubelet that plays the GPU nodes (`dpctl sim-kubelet`)
- ``emulator/``: the vLLM stand-in (`dpctl vllm-emulator`) and the simulated GPUs it shares
  with the kubelet
- ``nvidiasmi``: `dpctl sim-nvidia-smi`, nvidia-smi as seen in a simulated container
- ``simenv``: the environment contract between the simulated kubelet and its containers
- ``pythonpath``: what makes dpctl and dpsim importable in the processes the simulator starts
"""
