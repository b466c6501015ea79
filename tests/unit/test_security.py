"""Restrictions checked at build time, the guard's decision, header forwarding, and which group each endpoint
belongs to (`security`, `front.access`)."""

from __future__ import annotations

import re

import pytest

from pybind_serve.front.access import grpc_group, http_group
from pybind_serve.security import GROUPS, Guard, Restriction, forwarded_headers, restriction_problems


def test_restriction_problems_are_listed_together() -> None:
    problems = restriction_problems(
        [Restriction(("health", "nope"), "k", "v"), Restriction(("health",), "", "v"), "metadata"]  # type: ignore[list-item]
    )
    assert problems == [
        "unknown endpoint group 'nope'; the groups are " + ", ".join(GROUPS),
        "a restriction needs a header name and a value (strings), got "
        "Restriction(groups=('health',), key='', value='v')",
        "endpoint group 'health' is restricted more than once",
        "restricted must hold Restriction objects, got str",
    ]


def test_the_guard_compares_header_names_case_insensitively_and_values_exactly() -> None:
    guard = Guard([Restriction(("statistics", "trace"), "Admin-Key", "v")])
    assert guard.restricts("trace") and not guard.restricts("inference") and guard
    assert guard.refusal("statistics", {"admin-key": "v"}.get) is None
    assert guard.refusal("statistics", {"admin-key": "V"}.get) == "admin-key"
    assert guard.refusal("statistics", {}.get) == "admin-key"
    assert not Guard([])


def test_forwarded_headers_match_lower_case_names_and_refuse_reserved_ones() -> None:
    pattern = re.compile("^x-fwd-|^priority$", re.IGNORECASE)
    assert forwarded_headers(pattern, [("X-Fwd-A", "1"), ("x-other", "2")]) == {"x-fwd-a": "1"}
    assert forwarded_headers(None, [("X-Fwd-A", "1")]) == {}
    with pytest.raises(ValueError, match="reserved parameter"):
        forwarded_headers(pattern, [("Priority", "1")])


@pytest.mark.parametrize(
    ("path", "group"),
    [
        ("/v2/health/live", "health"),
        ("/v2/models/m/versions/2/ready", "health"),
        ("/v2", "metadata"),
        ("/v2/models/m", "metadata"),
        ("/v2/models/m/versions/1", "metadata"),
        ("/v2/models/m/generate_stream", "inference"),
        ("/v2/models/m/config", "model-config"),
        ("/v2/models/stats", "statistics"),
        ("/v2/models/m/versions/1/stats", "statistics"),
        ("/v2/systemsharedmemory/region/r/register", "shared-memory"),
        ("/v2/cudasharedmemory/status", "shared-memory"),
        ("/v2/repository/index", "model-repository"),
        ("/v2/repository/models/m/load", "model-repository"),
        ("/v2/trace/setting", "trace"),
        ("/v2/logging", "logging"),
        ("/metrics", None),
    ],
)
def test_each_rest_path_has_triton_s_group(path: str, group: str | None) -> None:
    assert http_group(path) == group


def test_every_grpc_method_of_the_service_has_a_group() -> None:
    from pybind_serve.protocol.proto import grpc_service_pb2 as pb

    methods = [m.name for m in pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods]
    assert [m for m in methods if grpc_group(m) is None] == []
