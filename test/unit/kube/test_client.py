"""Kube's verbs over a transport: paging, and what a call puts on the wire (credentials, query,
content type, JSON body, User-Agent) and how a refusal comes back."""

from __future__ import annotations

import asyncio
from pathlib import Path

from dpctl.kube import Kube

from .conftest import kubeconfig


class Paged(Kube):
    """list_all over scripted pages; records how many full items were alive at each page."""

    def __init__(self, pages: list[list[dict[str, object]]]) -> None:
        super().__init__(api=None)  # type: ignore[arg-type]
        self.pages = pages

    async def list_page(self, res: object, namespace: str | None = None, **kw: object) -> dict[str, object]:
        token = int(str(kw.get("continue_token") or 0))
        meta: dict[str, object] = {"resourceVersion": "9"}
        if token + 1 < len(self.pages):
            meta["continue"] = str(token + 1)
        return {"items": self.pages[token], "metadata": meta}


async def test_list_all_transforms_each_page_as_it_arrives() -> None:
    pages = [[{"n": 1, "big": "x" * 10}, {"n": 2, "big": "y"}], [{"n": 3, "big": "z"}]]
    seen: list[int] = []

    def slim(item: dict[str, object]) -> dict[str, object]:
        seen.append(int(str(item["n"])))
        return {"n": item["n"]}

    kube = Paged(pages)
    items, rv = await kube.list_all(object(), "ns", transform=slim)  # type: ignore[arg-type]
    assert (items, rv, seen) == ([{"n": 1}, {"n": 2}, {"n": 3}], "9", [1, 2, 3])
    assert (await kube.list_all(object(), "ns"))[0] == [*pages[0], *pages[1]]  # type: ignore[arg-type]


async def test_calls_carry_credentials_query_and_json_body(tmp_path: Path) -> None:
    from aiohttp import web

    from dpctl.kube import PODS, ApiError

    seen: list[tuple[str, str, str, str, str, bytes]] = []

    async def handler(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append(
            (
                request.method,
                request.path_qs,
                request.headers.get("Authorization", ""),
                request.headers.get("Content-Type", ""),
                request.headers.get("User-Agent", ""),
                body,
            )
        )
        if request.method == "DELETE":
            return web.json_response(
                {"kind": "Status", "reason": "Conflict", "message": "uid differs"}, status=409
            )
        return web.json_response({"metadata": {"name": "p"}})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    calls: list[tuple[str, str, int]] = []
    kube = await Kube.connect(
        str(kubeconfig(tmp_path, server=f"http://127.0.0.1:{port}")),
        observer=lambda verb, res, code, _s: calls.append((verb, res, code)),
    )
    try:
        assert await kube.patch(
            PODS, "p", {"metadata": {"labels": {"a": "b"}}}, "ns", field_manager="me"
        ) == {"metadata": {"name": "p"}}
        try:
            await kube.delete(PODS, "p", "ns", uid="u1")
        except ApiError as err:
            assert (err.status, err.reason, err.message) == (409, "Conflict", "uid differs")
        else:
            raise AssertionError("a 409 must raise")
    finally:
        await kube.close()
        await runner.cleanup()
    patch, delete = seen
    assert patch[:5] == (
        "PATCH",
        "/api/v1/namespaces/ns/pods/p?fieldManager=me",
        "Bearer t",
        "application/strategic-merge-patch+json",
        "dpctl",
    )
    assert patch[5] == b'{"metadata":{"labels":{"a":"b"}}}'
    assert delete[0] == "DELETE" and b'"preconditions":{"uid":"u1"}' in delete[5]
    assert calls == [("patch", "pods", 200), ("delete", "pods", 409)]


async def test_an_undecoded_delete_answer_still_frees_its_connection(tmp_path: Path) -> None:
    from aiohttp import web

    from dpctl.kube import PODS

    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"kind": "Pod", "metadata": {"name": request.match_info["name"]}})

    app = web.Application()
    app.router.add_route("DELETE", "/api/v1/namespaces/ns/pods/{name}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    # One connection in the pool: a second call could not start if the first held it.
    kube = await Kube.connect(str(kubeconfig(tmp_path, server=f"http://127.0.0.1:{port}")), pool_size=1)
    try:
        await kube.delete(PODS, "a", "ns")
        await asyncio.wait_for(kube.delete(PODS, "b", "ns"), timeout=10)
    finally:
        await kube.close()
        await runner.cleanup()
