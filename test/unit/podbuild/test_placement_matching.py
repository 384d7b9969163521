"""`node_mismatch` decides as Kubernetes does whether a Pod's placement admits a Node.

The scheduler, the kubelet's ``NodeAffinity`` admission and the simulated kubelet all rely on
these rules, so each row is one rule of the API's node selector semantics.
"""

from __future__ import annotations

from typing import Any

import pytest

from dpctl.api import HOSTNAME_LABEL
from dpctl.podbuild.placement import node_mismatch

NODE = "n1"
LABELS = {HOSTNAME_LABEL: NODE, "zone": "a", "gpus": "8"}


def terms(*items: dict[str, Any]) -> dict[str, Any]:
    return {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(items)}
            }
        }
    }


def match(*expressions: tuple[str, str, list[str]]) -> dict[str, Any]:
    return {"matchExpressions": [{"key": k, "operator": op, "values": v} for k, op, v in expressions]}


ADMITS = [
    pytest.param({}, id="no-placement-at-all"),
    pytest.param({"nodeSelector": {"zone": "a"}}, id="selector-matches"),
    pytest.param(terms(match(("zone", "NotIn", ["b"]))), id="notin-another-value"),
    pytest.param(terms(match(("rack", "NotIn", ["r1"]))), id="notin-true-for-an-absent-label"),
    pytest.param(terms(match(("rack", "DoesNotExist", []))), id="doesnotexist-absent-label"),
    pytest.param(terms(match(("zone", "Exists", []))), id="exists"),
    pytest.param(terms(match(("gpus", "Lt", ["9"]))), id="lt-on-integers"),
    pytest.param(terms(match(("zone", "In", ["b"])), match(("zone", "In", ["a"]))), id="terms-are-ored"),
    pytest.param(
        terms({"matchFields": [{"key": "metadata.name", "operator": "In", "values": [NODE]}]}),
        id="matchfields-on-the-name",
    ),
]

REFUSES = [
    pytest.param({"nodeName": "n2"}, id="node-name-another"),
    pytest.param({"nodeSelector": {"zone": "b"}}, id="selector-another-value"),
    pytest.param({"nodeSelector": {"rack": "r1"}}, id="selector-an-absent-label"),
    pytest.param(terms(match(("zone", "In", ["a"]), ("gpus", "Gt", ["8"]))), id="expressions-are-anded"),
    pytest.param(terms(match(("gpus", "Gt", ["x"]))), id="gt-on-a-non-integer"),
    pytest.param(terms(match(("rack", "In", ["r1"]))), id="in-false-for-an-absent-label"),
    pytest.param(terms(match(("zone", "Matches", ["a"]))), id="an-unknown-operator"),
    pytest.param(terms({}), id="an-empty-term-matches-nothing"),
    pytest.param(terms(), id="no-terms-match-nothing"),
    pytest.param(
        terms({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}),
        id="matchfields-another-name",
    ),
]


@pytest.mark.parametrize("spec", ADMITS)
def test_placement_that_admits_the_node_gives_no_reason(spec: dict[str, Any]) -> None:
    assert node_mismatch(spec, NODE, LABELS) == ""


@pytest.mark.parametrize("spec", REFUSES)
def test_placement_that_excludes_the_node_says_which_field(spec: dict[str, Any]) -> None:
    assert node_mismatch(spec, NODE, LABELS).startswith("spec.")


def test_unknown_labels_leave_only_the_name_to_decide() -> None:
    assert node_mismatch({"nodeSelector": {"zone": "b"}}, NODE, None) == ""
    assert node_mismatch({"nodeSelector": {HOSTNAME_LABEL: "n2"}}, NODE, None) != ""
