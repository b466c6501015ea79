"""`Serve`'s limits are checked when it is built, every problem listed at once (no server starts here)."""

from __future__ import annotations

from typing import Any

import pytest

from pybind_serve import ConfigurationError, Serve


def test_the_limits_default_to_what_docs_limits_md_says() -> None:
    serve = Serve()
    assert (serve.max_header_bytes, serve.max_header_count) == (64 << 10, 100)
    assert (serve.read_timeout_s, serve.drain_timeout_s, serve.idle_release_s) == (30.0, 30.0, 10.0)
    assert serve.fronts == 1


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"max_header_bytes": 0}, "max_header_bytes must be a positive int, got 0"),
        ({"max_header_count": 1.5}, "max_header_count must be a positive int, got 1.5"),
        ({"read_timeout_s": 0}, "read_timeout_s must be a number of seconds > 0, got 0"),
        ({"drain_timeout_s": float("inf")}, "drain_timeout_s must be a number of seconds > 0, got inf"),
        ({"idle_release_s": "10"}, "idle_release_s must be a number of seconds > 0, got '10'"),
        ({"startup_timeout_s": True}, "startup_timeout_s must be a number of seconds > 0, got True"),
        ({"fronts": 0}, "fronts must be a positive int, got 0"),
        ({"fronts": 2.0}, "fronts must be a positive int, got 2.0"),
    ],
)
def test_a_bad_limit_is_a_configuration_error(options: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Serve(**options)
    assert caught.value.problems == [problem]


def test_every_bad_limit_is_listed_together() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Serve(max_header_bytes=-1, read_timeout_s=-1, max_body_bytes=0)
    assert len(caught.value.problems) == 3
