"""ApiError: what the server's Status says, and the one rule for which failures are transient."""

from __future__ import annotations

import json

import aiohttp
import pytest

from dpctl.kube import ApiError, is_transient


def status_body(reason: str, message: str) -> bytes:
    return json.dumps({"kind": "Status", "status": "Failure", "reason": reason, "message": message}).encode()


def test_from_body_takes_the_status_reason_and_message() -> None:
    err = ApiError.from_body(
        409, status_body("AlreadyExists", 'pods "p" already exists'), "POST", "/api/v1/pods"
    )
    assert (err.status, err.reason, err.message) == (409, "AlreadyExists", 'pods "p" already exists')
    assert err.conflict and err.already_exists and not err.not_found
    assert str(err) == 'POST /api/v1/pods: 409 AlreadyExists: pods "p" already exists'


def test_from_body_keeps_a_body_that_is_not_a_status() -> None:
    err = ApiError.from_body(502, b"<html>bad gateway</html>", "GET", "/version")
    assert (err.reason, err.message) == ("", "<html>bad gateway</html>")
    assert len(ApiError.from_body(500, b"x" * 5000, "GET", "/").message) == 2000


def test_a_conflict_on_resource_version_is_not_already_exists() -> None:
    err = ApiError(409, "Conflict", "the object has been modified")
    assert err.conflict and not err.already_exists


@pytest.mark.parametrize(
    ("status", "flags"),
    [
        (404, {"not_found"}),
        (409, {"conflict"}),
        (410, {"gone"}),
        (422, {"invalid", "refused"}),
        (403, {"forbidden", "refused"}),
        (400, set()),
        (500, set()),
    ],
)
def test_status_properties(status: int, flags: set[str]) -> None:
    err = ApiError(status, "", "")
    names = {"not_found", "conflict", "gone", "already_exists", "invalid", "forbidden", "refused"}
    assert {n for n in names if getattr(err, n)} == flags


# The API server's whole answer to a JSON patch whose test failed (kube-apiserver 1.36).
NOT_APPLIED = ApiError(422, "Invalid", "the server rejected our request due to an error in our request")


def test_a_json_patch_whose_test_failed_is_a_conflict_not_a_refusal() -> None:
    assert NOT_APPLIED.patch_not_applied and NOT_APPLIED.conflict
    assert not NOT_APPLIED.refused  # the object changed: no fault of the request's to report
    assert is_transient(NOT_APPLIED)


def test_a_validation_failure_is_not_taken_for_a_failed_patch_test() -> None:
    invalid = ApiError(422, "Invalid", 'Pod "r-1" is invalid: metadata.labels: Invalid value')
    assert invalid.refused and not invalid.patch_not_applied and not invalid.conflict


def test_detail_drops_the_leading_object_name() -> None:
    invalid = ApiError(422, "Invalid", 'Pod "r-1" is invalid: spec.nodeName: Invalid value: "n2"')
    assert invalid.detail == 'spec.nodeName: Invalid value: "n2"'
    forbidden = ApiError(403, "Forbidden", 'pods "r-1" is forbidden: exceeded quota')
    assert forbidden.detail == "exceeded quota"
    # Without a quoted name before the marker, the message is not the "<kind> "<name>"" form.
    plain = ApiError(422, "Invalid", "the request is invalid: because")
    assert plain.detail == "the request is invalid: because"


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (ApiError(404, "NotFound", ""), True),
        (ApiError(409, "Conflict", ""), True),
        (ApiError(429, "TooManyRequests", ""), True),
        (ApiError(500, "InternalError", ""), True),
        (ApiError(503, "ServiceUnavailable", ""), True),
        (ApiError(400, "BadRequest", ""), False),
        (ApiError(401, "Unauthorized", ""), False),
        (ApiError(403, "Forbidden", ""), False),
        (ApiError(410, "Expired", ""), False),
        (ApiError(422, "Invalid", ""), False),
        (aiohttp.ClientConnectionError("reset"), True),
        (ConnectionRefusedError(), True),
        (TimeoutError(), True),
        (ValueError("bad"), False),
    ],
)
def test_is_transient(error: BaseException, transient: bool) -> None:
    assert is_transient(error) is transient
