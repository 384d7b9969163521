"""The requester stub: the only container of a server-requesting Pod (contract §3)."""
