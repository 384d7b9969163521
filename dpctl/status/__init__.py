"""``dpctl status``: the fleet as the caches show it (:mod:`.fleet`), and the command (:mod:`.cmd`).

Read-only and apart from the controller; it reads dual-pods meanings (bound, asleep, status
errors) from :mod:`dpctl.dualpods.podview`, where the controller reads them too.
"""
