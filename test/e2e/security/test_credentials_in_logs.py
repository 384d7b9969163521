"""No credential in the controller's output, without a cluster: ``dpctl controller`` at the
highest verbosity against a stand-in API server that refuses it (403), and one that breaks (500
echoing the request line), with a kubeconfig holding a bearer token. Whatever it logs on the way
to its exit, the token and the word ``Bearer`` are not in it.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

DPCTL = Path(sys.executable).with_name("dpctl")
TOKEN = (
    "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXBheWxvYWQtdGhhdC1tdXN0LW5vdC1sZWFr.c2lnbmF0dXJlLXRoYXQtbXVzdC1ub3QtbGVhaw"
)

pytestmark = pytest.mark.timeout(120)


def _status(code: int, reason: str, message: str) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return web.json_response(body, status=code)


async def _version(_: web.Request) -> web.Response:
    return web.json_response({"gitVersion": "v1.36.0"})


async def _forbidden(request: web.Request) -> web.Response:
    return _status(
        403,
        "Forbidden",
        f'pods is forbidden: User "system:serviceaccount:x:dpctlr" cannot list {request.path}',
    )


async def _broken(request: web.Request) -> web.Response:
    # A server that says too much: its own fault, but the controller must not add the header.
    return _status(500, "InternalError", f"internal error serving {request.method} {request.path_qs}")


@pytest.fixture(params=["forbidden", "broken"])
def api_server(request: pytest.FixtureRequest) -> Iterator[str]:
    handler = _forbidden if request.param == "forbidden" else _broken
    app = web.Application()
    app.router.add_get("/version", _version)
    app.router.add_route("*", "/{tail:.*}", handler)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.run_until_complete(runner.cleanup())
    loop.close()


def test_controller_never_logs_its_token(api_server: str, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": api_server}}],
                "users": [{"name": "u", "user": {"token": TOKEN}}],
                "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u", "namespace": "x"}}],
                "current-context": "ctx",
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if k not in ("KUBERNETES_SERVICE_HOST", "KUBECONFIG")}
    done = subprocess.run(
        [
            str(DPCTL),
            "controller",
            "-n",
            "x",
            "--kubeconfig",
            str(kubeconfig),
            "-v",
            "10",
            "--metrics-port=0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Cannot" in output, output  # it said why it stopped
    for secret in (TOKEN, *TOKEN.split(".")[1:]):
        assert secret not in output, "the bearer token is in the controller's output"
    assert "Bearer" not in output
    assert "Traceback" not in output
