"""Log levels and output: ``Serve(log_level=..., access_log=...)`` checked at once, pybind_serve's stderr handler
only where the application has none, and the line `Serve.serve` prints."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import pytest

from pybind_serve import Serve, Tensor, batch, logs
from pybind_serve.errors import ConfigurationError


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    """The pybind_serve logger without level or handlers of its own; put back afterwards."""
    logger = logging.getLogger("pybind_serve")
    level, handlers, set_before = logger.level, list(logger.handlers), logs._level_set
    logger.setLevel(logging.NOTSET)
    logger.handlers = []
    yield logger
    logger.setLevel(level)
    logger.handlers, logs._level_set = handlers, set_before


@contextlib.contextmanager
def without_root_handlers() -> Iterator[None]:
    """pytest adds its handler to the root logger for each test's call: away for the block."""
    root = logging.getLogger()
    saved = list(root.handlers)
    root.handlers.clear()
    try:
        yield
    finally:
        root.handlers[:] = saved


@pytest.mark.parametrize("level", ["critical", "error", "warning", "info", "debug", "trace", "INFO", "Debug"])
def test_uvicorn_s_levels_are_taken_in_any_case(level: str) -> None:
    assert logs.level_problems(level) == []
    assert Serve(log_level=level).log_level == level.lower()


@pytest.mark.parametrize("level", ["bogus", "", None, 20, "warn"])
def test_another_level_is_refused_when_the_serve_is_made(level: object) -> None:
    with pytest.raises(ConfigurationError) as refused:
        Serve(log_level=level)  # type: ignore[arg-type]
    expected = f"log_level must be one of 'critical', 'error', 'warning', 'info', 'debug', 'trace', got {level!r}"
    assert refused.value.problems == [expected]


def test_access_log_is_a_flag() -> None:
    assert Serve().access_log is False and Serve(access_log=True).access_log is True
    with pytest.raises(ConfigurationError, match=r"access_log must be True or False, got 'yes'"):
        Serve(access_log="yes")  # type: ignore[arg-type]


def test_lines_go_to_stderr_at_the_level_asked(logger: logging.Logger, capsys: pytest.CaptureFixture[str]) -> None:
    with without_root_handlers():
        logs.configure("info", "pybind_serve")
    logging.getLogger("pybind_serve.fronts").info("front started")
    logging.getLogger("pybind_serve").debug("not shown")
    assert capsys.readouterr().err == "[pybind_serve] INFO front started\n"
    with without_root_handlers():
        logs.configure("warning", "pybind_serve")  # again: the level changes, the handler stays the only one
    logging.getLogger("pybind_serve").info("not shown")
    assert len(logger.handlers) == 1 and capsys.readouterr().err == ""


def test_an_application_s_own_logging_is_left_alone(logger: logging.Logger) -> None:
    logger.setLevel(logging.DEBUG)
    logs.configure("warning", "pybind_serve")  # the root logger has a handler (pytest's, here)
    assert logger.handlers == [] and logger.level == logging.DEBUG


def test_trace_is_below_debug() -> None:
    assert logs.python_level("trace") < logging.DEBUG


def test_the_startup_line_says_what_is_served_and_where() -> None:
    serve = Serve(http_port=8000, grpc_port=8001, metrics_port=8002)
    assert serve._announcement() == (
        "pybind_serve: serving no models yet on http://127.0.0.1:8000 (gRPC 127.0.0.1:8001, "
        "metrics http://127.0.0.1:8002/metrics); Ctrl-C stops"
    )
    for name in ("b", "a"):
        serve.bind(
            name, batch(lambda x: {"x": x}), inputs=[Tensor("x", bytes, (1,))], outputs=[Tensor("x", bytes, (1,))]
        )
    quiet = Serve(host="0.0.0.0", http_port=9000, grpc_port=None, metrics_port=None, fronts=2)
    quiet.bind("a", batch(lambda x: {"x": x}), inputs=[Tensor("x", bytes, (1,))], outputs=[Tensor("x", bytes, (1,))])
    assert serve._announcement().startswith("pybind_serve: serving 2 models (a v1, b v1) on http://127.0.0.1:8000 (")
    assert quiet._announcement() == (
        "pybind_serve: serving 1 model (a v1) on http://127.0.0.1:9000, on every network interface, "
        "with 2 front processes; Ctrl-C stops"
    )
