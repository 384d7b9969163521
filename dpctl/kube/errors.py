"""What a failed API call means: :class:`ApiError` and the one :func:`is_transient`.

Owns turning an API server's answer (its ``Status`` body, or a watch's ``ERROR`` event) into an
exception whose properties name the cases callers branch on, and the single rule for which
failures are worth sending again unchanged. Knows nothing about how calls are sent.
"""

from __future__ import annotations

import aiohttp
import orjson

# What the API server says when a JSON patch does not apply (a ``test`` operation failed, or a
# path it names is gone): 422 Invalid with this message and no details, where a validation
# failure names the object ("Pod "x" is invalid: ...").
_PATCH_NOT_APPLIED = "the server rejected our request due to an error in our request"


class ApiError(Exception):
    """A failed API call, with the server's Status reason and message when it sent one."""

    def __init__(self, status: int, reason: str, message: str, verb: str = "", path: str = "") -> None:
        super().__init__(f"{verb} {path}: {status} {reason}: {message}".strip())
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        """A write lost a race: resourceVersion or UID precondition, the name already exists, or
        a JSON patch's ``test`` found the object changed."""
        return self.status == 409 or self.patch_not_applied

    @property
    def patch_not_applied(self) -> bool:
        """A JSON patch did not apply to the object as it is now: one of its tests failed."""
        return self.status == 422 and self.message == _PATCH_NOT_APPLIED

    @property
    def gone(self) -> bool:
        """The requested resourceVersion is too old (watch or list): relist."""
        return self.status == 410

    @property
    def already_exists(self) -> bool:
        return self.status == 409 and self.reason == "AlreadyExists"

    @property
    def invalid(self) -> bool:
        return self.status == 422

    @property
    def forbidden(self) -> bool:
        return self.status == 403

    @property
    def refused(self) -> bool:
        """The API server (422 Invalid) or an admission policy or RBAC (403 Forbidden) will not take
        the request as written: sending it again cannot help, only a change to what is sent."""
        return self.status in (403, 422) and not self.patch_not_applied

    @property
    def detail(self) -> str:
        """The server's message without its leading ``<kind> "<name>" is invalid:`` (or
        ``... is forbidden:``), for a sentence that names the object itself."""
        for marker in (" is invalid: ", " is forbidden: "):
            head, found, tail = self.message.partition(marker)
            if found and '"' in head:
                return tail
        return self.message

    @classmethod
    def from_body(cls, status: int, body: bytes, verb: str, path: str) -> ApiError:
        reason, message = "", body.decode("utf-8", "replace")[:2000]
        try:
            doc = orjson.loads(body)
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            reason = str(doc.get("reason", ""))
            message = str(doc.get("message", message))
        return cls(status, reason, message, verb, path)


def is_transient(error: BaseException) -> bool:
    """Whether a failed API call may succeed if sent again unchanged, after a backoff: the one
    definition every caller uses. Transient: no answer (connection refused or reset, timeout),
    the server restarting or overloaded (5xx, 429), and a race with another writer or with the
    cache's view (409 Conflict, a JSON patch whose test failed, 404 Not Found: the next event
    shows what changed). Everything
    else (400, 401, 403, 422, ...) needs a change to the request or to the cluster."""
    if isinstance(error, ApiError):
        return error.status in (404, 409, 429) or error.status >= 500 or error.patch_not_applied
    return isinstance(error, aiohttp.ClientError | OSError | TimeoutError)
