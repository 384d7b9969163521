"""`dpctl launcher`: the launcher process of contract §3, API-identical to upstream's launcher.

A launcher keeps a warm environment (vLLM imported once) and starts, lists and stops vLLM
*instances* as child processes on request over HTTP (port 8001). Modules, each owning one job:

* :mod:`~dpctl.launcher.api`: the wire shapes (request body, state objects, event lines) and names.
* :mod:`~dpctl.launcher.table`: the instance table, the revision counter and the bounded event
  buffer behind watch/``since``/410; pure.
* :mod:`~dpctl.launcher.logrange`: the ``Range`` header of the log endpoint; pure.
* :mod:`~dpctl.launcher.gpus`: GPU UUID → index (NVML, else ``nvidia-smi``, else mock GPUs).
* :mod:`~dpctl.launcher.children`: the child processes (spawn, exit detection, stop).
* :mod:`~dpctl.launcher.manager`: the table, the children and the GPU map together; what the
  handlers call.
* :mod:`~dpctl.launcher.server`: the aiohttp app (L1–L10).
* :mod:`~dpctl.launcher.main`: the `dpctl launcher` command line.
* :mod:`~dpctl.launcher.notifier`: `dpctl launcher-notifier`, the Pod's state-change-reflector
  sidecar (§3.3).
"""
