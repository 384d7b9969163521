"""The requester's state and both finalizers: the writes every other step ends with.

User mistakes (bad server-patch, admin-port, gpu-map, a runner the API server refuses) become
the requester's status annotation and an Event here, and wait for an object to change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from dpctl import api
from dpctl.dualpods import patches, podview
from dpctl.dualpods.patches import Op, Patch
from dpctl.dualpods.podview import RawObj
from dpctl.dualpods.ports import ErrorReason
from dpctl.dualpods.state import ServerState
from dpctl.dualpods.steps.context import SETTLE_POLL_S, Context
from dpctl.kube import ApiError
from dpctl.workqueue.outcome import Done, Outcome, RequeueAfter

DONE = Done()


async def patch_ignoring_gone(cx: Context, pod: RawObj, patch: Patch | list[Op]) -> None:
    """Patch ``pod`` with a patch preconditioned on its UID; a Pod gone, replaced, changed in a
    field the patch tests, or being deleted meanwhile is no error (its event brings the server
    back)."""
    try:
        await cx.ports.pods.patch_pod(podview.name(pod), patch)
    except ApiError as err:
        # 422 "no new finalizers can be added if the object is being deleted": the cache has
        # not seen the deletion yet (the soak found this); its event brings the server back.
        being_deleted = err.invalid and "being deleted" in err.message
        if not (err.not_found or err.conflict or being_deleted):
            raise


async def drop_runner_finalizer(cx: Context, runner: RawObj) -> None:
    present = podview.runner_finalizers(runner)
    if present:
        await patch_ignoring_gone(cx, runner, patches.without_finalizers(runner, present))
        cx.log.progress("Removed finalizer from server-running Pod", runner=podview.name(runner))


async def set_requester_finalizer(cx: Context, requester: RawObj, present: bool) -> None:
    if (api.REQUESTER_FINALIZER in podview.finalizers(requester)) == present:
        return
    await patch_ignoring_gone(
        cx, requester, patches.finalizer_change(requester, api.REQUESTER_FINALIZER, present)
    )
    cx.log.progress(
        "Added requester finalizer" if present else "Removed requester finalizer",
        requester=podview.name(requester),
    )


async def ensure_requester_state(
    cx: Context,
    st: ServerState,
    requester: RawObj,
    runner: RawObj | None,
    errors: Sequence[str],
    instance_id: str | None = None,
) -> None:
    """One patch, only when something differs: status, FYI labels and annotation, finalizer."""
    patch = patches.requester_state(
        requester, runner, errors, ",".join(st.known_gpus(requester)), instance_id
    )
    if patch is not None:
        await patch_ignoring_gone(cx, requester, patches.of_uid(requester, patch))


async def user_error(
    cx: Context, st: ServerState, requester: RawObj, reason: ErrorReason, message: str
) -> Outcome:
    _tell(cx, requester, reason, message)
    await ensure_requester_state(cx, st, requester, None, [message])
    return DONE  # retried when the requester, the gpu-map or its Node changes


async def user_errors(
    cx: Context, st: ServerState, requester: RawObj, reason: ErrorReason, messages: Sequence[str]
) -> Outcome:
    """Several mistakes at once (an ISC's bad keys, each named): all in the status together."""
    for message in messages:
        _tell(cx, requester, reason, message)
    await ensure_requester_state(cx, st, requester, None, messages)
    return DONE


TWO_DIALECTS: Final = (
    f"the Pod carries both {api.ORIGINAL.server_patch} (dual-pods at 8ed2953) and"
    f" {api.HEAD.server_patch} (current upstream); remove one of them"
)


async def refuse_two_dialects(cx: Context, requester: RawObj) -> Outcome:
    """Contract §2b: the status error in both dialects' annotations, and nothing else."""
    _tell(cx, requester, "TwoDialects", TWO_DIALECTS)
    patch = patches.status_in_every_dialect(requester, [TWO_DIALECTS])
    if patch is not None:
        await patch_ignoring_gone(cx, requester, patches.of_uid(requester, patch))
    return DONE  # retried when the requester changes


TWO_PATHS: Final = f"annotations server-patch and {api.INFERENCE_SERVER_CONFIG_ANNOTATION.rpartition('/')[2]} are mutually exclusive"


async def refuse_two_paths(cx: Context, st: ServerState, requester: RawObj) -> Outcome:
    """Launcher contract §4 [D]: a status error, and nothing else (upstream silently takes the ISC)."""
    return await user_error(cx, st, requester, "TwoPaths", TWO_PATHS)


def _tell(cx: Context, requester: RawObj, reason: ErrorReason, message: str) -> None:
    """Count, and log and record an Event once per message (not on every retry)."""
    cx.ports.report.status_error(reason)
    if message not in podview.status_errors(requester):
        cx.log.warning(
            "Server-requesting Pod cannot be served", requester=podview.name(requester), reason=message
        )
        cx.ports.report.event(requester, "Warning", reason, message)


async def wait(cx: Context, st: ServerState, requester: RawObj, why: str) -> Outcome:
    """Look again soon. The requester got this far, so the errors its status shows (the stub
    did not answer, a bad patch since fixed) hold no more and go now, not after the wait."""
    if podview.status_errors(requester):
        await ensure_requester_state(cx, st, requester, None, [])
    return RequeueAfter(SETTLE_POLL_S, why)
