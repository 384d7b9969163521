"""The client of the simulated kubelet's admin API (``dpctl sim-kubelet ctl``, and tests).

Standard library only, so the command starts fast and tests can call it without the kubelet's
dependencies. The server (``admin``) writes its URL to ``<state dir>/kubelet-admin.json``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Final

ADMIN_FILE: Final = "kubelet-admin.json"
ACTIONS: Final = ("not-ready", "ready", "remove", "add")
CTL_TIMEOUT_S: Final = 60.0


def admin_url(state_dir: Path) -> str:
    try:
        info: dict[str, Any] = json.loads((state_dir / ADMIN_FILE).read_text())
    except (OSError, ValueError) as e:
        raise RuntimeError(
            f"no simulated kubelet admin API found in {state_dir} ({e}); is sim-kubelet running?"
        ) from e
    return str(info["url"])


def call(state_dir: Path, method: str, path: str, timeout: float = CTL_TIMEOUT_S) -> tuple[int, Any]:
    """One admin API call: (HTTP status, parsed JSON answer). Raises RuntimeError when unreachable."""
    url = admin_url(state_dir) + path
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)  # noqa: S310 - loopback URL we wrote
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            return e.code, json.loads(body)
        except ValueError:
            return e.code, {"error": body.decode(errors="replace")}
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        raise RuntimeError(f"cannot reach the simulated kubelet at {url}: {e}") from e


def node_action(state_dir: Path, node: str, action: str, timeout: float = CTL_TIMEOUT_S) -> dict[str, Any]:
    """Apply an admin action to a node and return its description; raises RuntimeError on failure."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    status, body = call(state_dir, "POST", f"/nodes/{node}/{action}", timeout)
    if status != 200:
        raise RuntimeError(
            f"{action} {node}: HTTP {status}: {body.get('error', body) if isinstance(body, dict) else body}"
        )
    return dict(body)
