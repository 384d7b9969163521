"""The steps of contract §5, one module per family; each step acts through the ports and
returns an :class:`~dpctl.workqueue.outcome.Outcome`.

- :mod:`.context`: what every step reads and acts through (cache, ports, soft state, settings);
- :mod:`.finalizers`: the requester's state and both finalizers, and user errors shown there;
- :mod:`.teardown`: a runner deleted, a requester gone (unbind: sleep or delete), end of life;
- :mod:`.serving`: a bound pair kept right: awake, readiness relayed;
- :mod:`.pool`: the sleepers: which may be awake, the sleeper limit, one to wake, re-sleeping;
- :mod:`.binding`: a runner for a requester, by binding a sleeper or creating one;
- :mod:`.actuation`: an unbound requester: its GPUs, its runner's build, then bind or create.
"""
