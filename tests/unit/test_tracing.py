"""Tracing without a server: `Tracing`'s checks, Triton's trace and log settings (`trace_settings`, `log_settings`),
and the spans a `RequestTrace` makes of a request's times (into an in-memory exporter)."""

from __future__ import annotations

import asyncio
import doctest
import itertools
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from pybind_serve import ConfigurationError, Serve, Tensor, Tracing
from pybind_serve import tracing as tracing_module
from pybind_serve.config import ModelConfig
from pybind_serve.errors import InvalidInputError, ModelNotFoundError
from pybind_serve.front import log_settings, trace_settings
from pybind_serve.front.log_settings import LogSettings
from pybind_serve.front.models import Models
from pybind_serve.front.runtime_settings import RuntimeSettings
from pybind_serve.front.trace_settings import TraceSettings
from pybind_serve.front.trace_spans import Tracer
from pybind_serve.protocol.messages import InferRequest
from pybind_serve.spec import ModelSpec

pytest.importorskip("opentelemetry.sdk", reason="the tracing extra: pip install -e '.[tracing]'")

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from pybind_serve.front.trace_export import Exporting

CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
MADE: list[InMemorySpanExporter] = []


def memory_exporter() -> InMemorySpanExporter:
    """The factory `Tracing(exporter="tests.unit.test_tracing:memory_exporter")` names."""
    MADE.append(InMemorySpanExporter())
    return MADE[-1]


@pytest.mark.parametrize("module", [trace_settings, log_settings], ids=lambda m: m.__name__)
def test_the_docstring_examples_run(module: Any) -> None:
    assert not doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed


# -- Tracing ----------------------------------------------------------------------------------------------------


def test_tracing_says_what_is_wrong() -> None:
    problems = Tracing(level=["OFF", "TENSORS"], count=-2, exporter="zipkin").problems(check_installed=False)
    assert problems == [
        "level 'OFF' must be the only one, got ['OFF', 'TENSORS']",
        "count must be an int >= -1 (-1: no limit), got -2",
        "exporter must be 'otlp', 'console', 'file' or 'package.module:factory', got 'zipkin'",
    ]
    assert Tracing(exporter="file").problems() == ["exporter 'file' needs file=<path of the JSON-lines file to write>"]
    with pytest.raises(ConfigurationError, match="tracing: rate must be an int >= 1"):
        Serve(tracing=Tracing(rate=0))
    with pytest.raises(ConfigurationError, match="tracing must be a Tracing, got dict"):
        Serve(tracing={"level": "TIMESTAMPS"})  # type: ignore[arg-type]


def test_tracing_names_the_package_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Tracing().problems() == []  # the tracing extra is installed
    monkeypatch.setattr(tracing_module, "_importable", lambda name: "grpc" not in name)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    assert Tracing().problems() == [
        "opentelemetry.exporter.otlp.proto.grpc is not installed: pip install 'pybind_serve[tracing]'"
    ]
    monkeypatch.undo()
    assert Tracing(exporter="no_such_module:factory").problems() == [
        "no_such_module is not installed: pip install 'pybind_serve[tracing]'"
    ]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    assert "OTLP protocol 'http/json'" in Tracing().problems()[0]


def test_tracing_goes_to_the_front_and_back() -> None:
    tracing = Tracing(level=["tensors", "TIMESTAMPS"], rate=3, count=5, file="spans.jsonl", service_name="svc")
    wire = tracing.to_wire()
    assert wire["level"] == ["TIMESTAMPS", "TENSORS"] and wire["exporter"] == "file"
    assert wire["file"].endswith("/spans.jsonl") and wire["file"].startswith("/")
    back = Tracing.from_wire(wire)
    assert (back.levels, back.rate, back.count, back.service_name) == (("TIMESTAMPS", "TENSORS"), 3, 5, "svc")


# -- trace settings ---------------------------------------------------------------------------------------------


def test_rate_and_count_decide_which_requests_are_traced() -> None:
    settings = TraceSettings(("TIMESTAMPS",), rate=3, count=2)
    assert [settings.sampler("m").sample() for _ in range(9)] == [False, False, True, False, False, True] + [False] * 3
    assert settings.document(None)["trace_count"] == "0"
    settings.refresh()
    assert not settings.on
    settings.update(None, settings.parse({"trace_count": "-1", "trace_rate": 1}))
    assert settings.on and all(settings.sampler("m").sample() for _ in range(5))
    settings.update(None, settings.parse({"trace_level": ["OFF"]}))
    assert not settings.on and not settings.sampler("m").sample()
    assert settings.document(None)["trace_level"] == ["OFF"]


def test_a_models_settings_start_from_the_servers_and_clear_back_to_them() -> None:
    settings = TraceSettings(("TIMESTAMPS",), rate=1, count=-1)
    settings.update("m", settings.parse({"trace_rate": "4"}))
    model = settings.document("m")
    assert model["trace_rate"] == "4" and model["trace_level"] == ["TIMESTAMPS"]
    assert settings.document("other")["trace_rate"] == "1" and settings.document(None)["trace_rate"] == "1"
    # the server's change reaches what the model did not set itself, not what it did
    settings.update(None, settings.parse({"trace_rate": "2", "trace_level": ["TIMESTAMPS", "TENSORS"]}))
    assert settings.document("m")["trace_rate"] == "4"
    assert settings.document("m")["trace_level"] == ["TIMESTAMPS", "TENSORS"]
    settings.update("m", settings.parse({"trace_rate": None}))
    assert settings.document("m")["trace_rate"] == "2"
    # null on the server's settings restores what the server started with
    settings.update(None, settings.parse({"trace_rate": None, "trace_level": None}))
    assert settings.document(None)["trace_rate"] == "1" and settings.document(None)["trace_level"] == ["TIMESTAMPS"]


def test_a_model_may_trace_while_the_server_does_not() -> None:
    settings = TraceSettings((), rate=1, count=-1)
    assert not settings.on
    parsed = settings.parse({"trace_level": ["TIMESTAMPS"]})
    assert settings.would_trace("m", parsed)
    settings.update("m", parsed)
    assert settings.on and settings.sampler("m").sample() and not settings.sampler("other").sample()
    assert settings.overrides() == {
        None: {"trace_level": ["OFF"], "trace_rate": "1", "trace_count": "-1", "log_frequency": "0"},
        "m": {"trace_level": ["TIMESTAMPS"]},
    }


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"trace_file": "/tmp/x"}, "trace file location can not be updated through network protocol"),
        ({"trace_mode": "triton"}, "trace mode can not be updated through network protocol"),
        ({"trace_rate": "0"}, "Unable to parse 'trace_rate': expected an integer >= 1 (a string), got '0'"),
        ({"trace_count": "-2"}, "Unable to parse 'trace_count': expected an integer >= -1"),
        ({"log_frequency": "often"}, "Unable to parse 'log_frequency'"),
        ({"trace_rate": True}, "Unable to parse 'trace_rate'"),
        ({"trace_level": ["LOUD"]}, "trace_level: level must be 'OFF', 'TIMESTAMPS', 'TENSORS'"),
        ({"trace_level": ["OFF", "TIMESTAMPS"]}, "trace_level: level 'OFF' must be the only one"),
        ({"sample": "1"}, "unknown trace setting 'sample'; the settings are trace_level, trace_rate"),
    ],
)
def test_a_wrong_trace_setting_is_refused_saying_why(changes: dict[str, Any], message: str) -> None:
    settings = TraceSettings(("TIMESTAMPS",), rate=1, count=-1)
    with pytest.raises(InvalidInputError) as refused:
        settings.parse(changes)
    assert message in str(refused.value)
    assert settings.parse({"trace_file": None, "trace_rate": 7}) == {"trace_rate": 7}  # null: nothing to change


def test_turning_tracing_on_without_the_sdk_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    tracer = Tracer(None)
    assert not tracer.on and tracer.document(None)["trace_mode"] == "opentelemetry"
    monkeypatch.setattr(Tracing, "missing_packages", lambda self: ["opentelemetry.sdk"])
    with pytest.raises(InvalidInputError, match=r"tracing cannot be turned on: opentelemetry.sdk is not installed"):
        tracer.update(None, {"trace_level": ["TIMESTAMPS"]})
    assert not tracer.on and tracer.document(None)["trace_level"] == ["OFF"]


# -- log settings -----------------------------------------------------------------------------------------------


@pytest.fixture
def front_logging() -> Iterator[logging.Handler]:
    """A handler on pybind_serve's logger, which does not propagate, as the front has them (uvicorn's too); every
    logger touched is put back after."""
    names = ("pybind_serve", "uvicorn", "uvicorn.error", "")
    saved = {name: (lg.level, list(lg.handlers), lg.propagate) for name in names if (lg := logging.getLogger(name))}
    formats = {h: (h.formatter, list(h.filters)) for _, handlers, _ in saved.values() for h in handlers}
    for name in ("pybind_serve", "uvicorn"):
        logging.getLogger(name).propagate = False
    handler = logging.Handler()
    handler.setFormatter(logging.Formatter("[front] %(levelname)s %(message)s"))
    logging.getLogger("pybind_serve").addHandler(handler)
    try:
        yield handler
    finally:
        for name, (level, handlers, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.setLevel(level)
            logger.handlers[:] = handlers
            logger.propagate = propagate
        for kept, (formatter, filters) in formats.items():  # pytest's own handlers are there too
            kept.setFormatter(formatter)
            kept.filters[:] = filters


def test_log_settings_start_from_the_servers_log_level() -> None:
    assert LogSettings("debug").document() == {
        "log_file": "",
        "log_info": True,
        "log_warning": True,
        "log_error": True,
        "log_verbose_level": 1,
        "log_format": "default",
    }
    assert LogSettings("error").document()["log_warning"] is False
    assert LogSettings("trace").document()["log_verbose_level"] == 2


def test_log_settings_set_the_fronts_levels_and_format(front_logging: logging.Handler) -> None:
    settings = LogSettings("warning")
    records: list[str] = []
    front_logging.emit = lambda record: records.append(front_logging.format(record))  # type: ignore[method-assign]
    log = logging.getLogger("pybind_serve.front")
    settings.update(settings.parse({"log_info": True, "log_warning": False}))
    log.info("an info line")
    log.warning("a warning line")
    log.debug("a debug line")
    assert records == ["[front] INFO an info line"]
    settings.update(settings.parse({"log_verbose_level": 1, "log_format": "ISO8601"}))
    log.debug("a debug line")
    assert len(records) == 2
    assert time.strftime("%Y-%m-%dT", time.gmtime()) in records[1] and " DEBUG " in records[1]
    assert "test_tracing.py:" in records[1] and records[1].endswith("] a debug line")
    settings.update(settings.parse({"log_format": "default", "log_verbose_level": 0, "log_error": False}))
    log.error("an error line")
    log.info("another info line")
    assert records[2:] == ["[front] INFO another info line"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"log_info": "true"}, "expect boolean for 'log_info', got 'true'"),
        ({"log_verbose_level": -1}, "expect an integer >= 0 for 'log_verbose_level', got -1"),
        ({"log_verbose_level": True}, "expect an integer >= 0 for 'log_verbose_level'"),
        ({"log_format": "json"}, "invalid argument for log_format, got: 'json'"),
        ({"log_file": "/tmp/log"}, "log file location can not be updated through network protocol"),
        ({"log_colour": True}, "unknown log setting 'log_colour'"),
    ],
)
def test_a_wrong_log_setting_is_refused_saying_why(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError) as refused:
        LogSettings().parse(changes)
    assert message in str(refused.value)


# -- spans ------------------------------------------------------------------------------------------------------


@pytest.fixture
def exporting() -> Iterator[Exporting]:
    exporting = Exporting(Tracing(exporter="tests.unit.test_tracing:memory_exporter"))
    yield exporting
    exporting.close()


def spec() -> ModelSpec:
    x, y = Tensor("x", np.float32, (-1,)), Tensor("y", np.float32, (-1,))
    return ModelSpec("m", 1, (x,), (y,), ModelConfig(max_batch_size=8))


def finished(exporting: Exporting) -> dict[str, Any]:
    exporting.provider.force_flush()
    return {span.name: span for span in MADE[-1].get_finished_spans()}


def test_a_request_trace_makes_the_request_span_and_its_steps(exporting: Exporting) -> None:
    ended: list[bool] = []
    arrived = time.monotonic()
    trace = exporting.begin(
        "http", CALLER.encode(), b"k=v", spec(), arrived, tensors=True, ended=lambda: ended.append(1)
    )
    assert trace is not None
    request = InferRequest("m", 1, {"x": np.zeros((2, 3), np.float32)}, rows=2, id="req-7")
    respond = trace.admitted(request, lambda outputs: b"encoded")
    trace.queued(arrived + 0.001)
    traceparent = trace.dispatched(arrived + 0.002, rows=5, requests=2)
    at = int(arrived * 1e9)
    trace.computed([at + 3_000_000, at + 4_000_000, at + 7_000_000, at + 8_000_000])
    time.sleep(max(0.0, arrived + 0.01 - time.monotonic()))  # the worker's times are in the past
    assert respond({"y": np.ones((2, 3), np.float32)}) == b"encoded"
    trace.end()
    spans = finished(exporting)
    assert set(spans) == {"infer m", "queue", "compute-input", "compute-infer", "compute-output"}
    root = spans["infer m"]
    assert traceparent == f"00-{root.context.trace_id:032x}-{root.context.span_id:016x}-01"
    assert f"{root.context.trace_id:032x}" == CALLER.split("-")[1]
    assert root.parent is not None and root.parent.span_id == int(CALLER.split("-")[2], 16)
    assert root.kind == SpanKind.SERVER
    assert dict(root.attributes or {}) == {
        "triton.model_name": "m",
        "triton.model_version": 1,
        "pybind_serve.protocol": "http",
        "pybind_serve.batch_size": 2,
        "triton.request_id": "req-7",
        "pybind_serve.input.x": "FP32[2, 3]",
        "pybind_serve.output.y": "FP32[2, 3]",
    }
    order = ["queue", "compute-input", "compute-infer", "compute-output"]
    for name in order:
        assert spans[name].parent is not None and spans[name].parent.span_id == root.context.span_id
        assert root.start_time <= spans[name].start_time <= spans[name].end_time <= root.end_time
    for earlier, later in itertools.pairwise(order):
        assert spans[earlier].end_time == spans[later].start_time, (earlier, later)
    assert spans["compute-infer"].end_time - spans["compute-infer"].start_time == 3_000_000
    assert spans["compute-output"].end_time - spans["compute-output"].start_time >= 3_000_000  # until encoded
    assert dict(spans["compute-infer"].attributes or {}) == {
        "pybind_serve.batch_size": 5,
        "pybind_serve.batch_requests": 2,
    }
    assert [event.name for event in spans["compute-input"].events] == ["worker received the batch"]
    assert root.status.status_code == StatusCode.UNSET and ended == [True]


def test_a_failed_request_ends_its_span_with_the_error(exporting: Exporting) -> None:
    from pybind_serve.errors import ModelExecutionError

    trace = exporting.begin("grpc", None, None, spec(), time.monotonic(), tensors=False, ended=lambda: None)
    assert trace is not None
    trace.queued(time.monotonic())
    trace.dispatched(time.monotonic(), 1, 1)
    now = time.monotonic_ns()
    trace.computed([now, now + 10, now + 20])  # failed in the function
    trace.end(ModelExecutionError("model 'm' v1: ValueError: bad"))
    spans = finished(exporting)
    assert set(spans) == {"infer m", "queue", "compute-input", "compute-infer"}
    root = spans["infer m"]
    assert root.parent is None  # no caller: a trace of its own
    assert root.status.status_code == StatusCode.ERROR
    assert root.status.description == "model 'm' v1: ValueError: bad"
    assert (root.attributes or {})["error.type"] == "ModelExecutionError"


def test_a_caller_that_does_not_sample_is_followed(exporting: Exporting) -> None:
    unsampled = CALLER[:-2] + "00"
    assert exporting.begin("http", unsampled, None, spec(), time.monotonic(), False, lambda: None) is None
    assert finished(exporting) == {}


def test_a_restarted_front_takes_the_settings_of_a_running_one(front_logging: logging.Handler) -> None:
    async def check() -> None:
        models = Models()
        models.load(spec())
        running = RuntimeSettings(Tracer(None), LogSettings("warning"), models)
        await running.trace(None, {"trace_rate": "5", "trace_level": ["TIMESTAMPS"]})
        await running.trace("m", {"trace_count": "3"})
        await running.logging({"log_verbose_level": 1, "log_format": "ISO8601"})
        restarted = RuntimeSettings(Tracer(None), LogSettings("warning"), models)
        restarted.restore(json.loads(json.dumps(running.snapshot())))  # as it crosses between the fronts
        for model in (None, "m"):
            assert await restarted.trace(model) == await running.trace(model)
        assert await restarted.trace("m") == {**await running.trace(None), "trace_count": "3"}
        assert await restarted.logging() == await running.logging()
        with pytest.raises(ModelNotFoundError):
            await restarted.trace("nope")

    asyncio.run(check())
