"""OpenTelemetry tracing and Triton's trace and logging extensions, against a real server and real clients.

Spans go to a JSON-lines file (`Tracing(file=...)`), which the tests read: a request's span ``infer <model>`` is
a child of the caller's (W3C ``traceparent`` over HTTP headers and gRPC metadata), with its ``queue`` and
``compute-*`` children, whose times come from the worker (a thread or a process of its own). The settings
endpoints are driven with tritonclient over both protocols, as Triton's users do.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import numpy as np
import pytest

from pybind_serve import ModelConfig, Request, Serve, Tensor, Tracing, batch
from tests.conftest import module_server, wait_until
from tests.integration.test_fronts import call, connections, front_pids

from .conftest import WAIT_S

pytest.importorskip("opentelemetry.sdk", reason="the tracing extra: pip install -e '.[tracing]'")
grpcclient = pytest.importorskip("tritonclient.grpc")
httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

X = [Tensor("a", np.float32, (-1,)), Tensor("b", np.float32, (-1,))]
Y = [Tensor("s", np.float32, (-1,))]
BODY = {
    "inputs": [
        {"name": "a", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]},
        {"name": "b", "datatype": "FP32", "shape": [1, 2], "data": [3, 4]},
    ]
}
STEPS = ("queue", "compute-input", "compute-infer", "compute-output")


@batch
def add(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    return {"s": a + b}


@batch
def fails(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    raise ValueError("this model always fails")


def words(requests: list[Request]) -> Iterator[list[dict[str, np.ndarray]]]:
    """Streams each request's traceparent back, twice: what the function saw of the trace."""
    for _ in range(2):
        yield [{"text_output": np.array([[str(r.traceparent).encode()]], dtype=object)} for r in requests]


def _setup(serve: Serve) -> None:
    batching = ModelConfig(max_batch_size=8)
    serve.bind("add", add, X, Y, config=batching)
    serve.bind("proc", add, X, Y, config=ModelConfig(max_batch_size=8, instances=1))  # a worker process
    serve.bind("fails", fails, X, Y, config=batching)
    text_in, text_out = [Tensor("text_input", bytes, (1,))], [Tensor("text_output", bytes, (1,))]
    serve.bind("words", words, text_in, text_out, config=ModelConfig(max_batch_size=8, decoupled=True))


def _warm_up(serve: Serve) -> None:
    for model in ("add", "proc", "fails"):
        httpx.post(f"{serve.http_url}/v2/models/{model}/infer", json=BODY, timeout=WAIT_S)
    httpx.post(f"{serve.http_url}/v2/models/words/generate_stream", json={"text_input": "x"}, timeout=WAIT_S)


@pytest.fixture(scope="module")
def spans_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tracing") / "spans.jsonl"


@pytest.fixture(scope="module")
def server(spans_file: Path) -> Iterator[Serve]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")  # the front exports every 20 ms instead of 5 s
        with module_server(_setup, _warm_up, tracing=Tracing(file=str(spans_file))) as serve:
            yield serve


def caller() -> tuple[str, str, str]:
    """A trace id and span id of the caller's, and its traceparent (sampled)."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def spans_of(path: Path, trace_id: str, count: int) -> dict[str, dict[str, Any]]:
    """The spans of one trace in the file, by name, once there are ``count`` of them."""
    deadline = time.monotonic() + WAIT_S
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        found = [span for span in map(json.loads, lines) if span["context"]["trace_id"] == f"0x{trace_id}"]
        if len(found) >= count:
            assert len(found) == count, [span["name"] for span in found]
            return {span["name"]: span for span in found}
        assert time.monotonic() < deadline, f"{len(found)} of {count} spans of trace {trace_id} were exported"
        time.sleep(0.02)


def check_request_span(
    spans: dict[str, dict[str, Any]], model: str, parent: str | None, steps: tuple[str, ...]
) -> dict[str, Any]:
    """The request's span is the caller's child, its steps its children, one after the other within it."""
    root = spans[f"infer {model}"]
    assert set(spans) == {root["name"], *steps}
    assert root["parent_id"] == (f"0x{parent}" if parent else None)
    assert root["kind"] == "SpanKind.SERVER"
    assert root["attributes"]["triton.model_name"] == model
    previous_end = root["start_time"]
    for name in steps:
        step = spans[name]
        assert step["parent_id"] == root["context"]["span_id"], name
        assert previous_end <= step["start_time"] <= step["end_time"] <= root["end_time"], name
        previous_end = step["end_time"]
    return root


def test_an_http_request_with_a_traceparent_is_traced_under_the_callers_span(server: Serve, spans_file: Path) -> None:
    trace_id, span_id, traceparent = caller()
    url = f"{server.http_url}/v2/models/add/infer"
    assert httpx.post(url, json=BODY, headers={"traceparent": traceparent}, timeout=WAIT_S).status_code == 200
    spans = spans_of(spans_file, trace_id, 5)
    root = check_request_span(spans, "add", span_id, STEPS)
    assert root["attributes"] == {
        "triton.model_name": "add",
        "triton.model_version": 1,
        "pybind_serve.protocol": "http",
        "pybind_serve.batch_size": 1,
    }
    assert root["status"]["status_code"] == "UNSET"
    assert root["resource"]["attributes"]["service.name"] == "pybind_serve"
    assert spans["compute-infer"]["attributes"] == {"pybind_serve.batch_size": 1, "pybind_serve.batch_requests": 1}
    assert [event["name"] for event in spans["compute-input"]["events"]] == ["worker received the batch"]


def test_a_grpc_request_with_traceparent_metadata_is_traced_under_the_callers_span(
    server: Serve, spans_file: Path
) -> None:
    trace_id, span_id, traceparent = caller()
    assert server.grpc_url is not None
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        inputs = [grpcclient.InferInput(name, [1, 2], "FP32") for name in ("a", "b")]
        for tensor in inputs:
            tensor.set_data_from_numpy(np.ones((1, 2), np.float32))
        headers = {"traceparent": traceparent, "tracestate": "vendor=1"}
        result = client.infer("add", inputs, headers=headers, request_id="r-1")
    assert result.as_numpy("s").tolist() == [[2.0, 2.0]]
    spans = spans_of(spans_file, trace_id, 5)
    root = check_request_span(spans, "add", span_id, STEPS)
    assert root["attributes"]["pybind_serve.protocol"] == "grpc"
    assert root["attributes"]["triton.request_id"] == "r-1"
    assert root["context"]["trace_state"] == "vendor=1"  # the caller's tracestate, carried on


def test_a_request_without_a_caller_starts_a_trace_of_its_own(server: Serve, spans_file: Path) -> None:
    before = len(spans_file.read_text().splitlines())
    assert httpx.post(f"{server.http_url}/v2/models/add/infer", json=BODY, timeout=WAIT_S).status_code == 200
    deadline = time.monotonic() + WAIT_S
    while len(lines := spans_file.read_text().splitlines()) < before + 5:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    roots = [span for span in map(json.loads, lines[before:]) if span["name"] == "infer add"]
    assert len(roots) == 1 and roots[0]["parent_id"] is None


def test_a_worker_process_reports_its_times_too(server: Serve, spans_file: Path) -> None:
    trace_id, span_id, traceparent = caller()
    url = f"{server.http_url}/v2/models/proc/infer"
    assert httpx.post(url, json=BODY, headers={"traceparent": traceparent}, timeout=WAIT_S).status_code == 200
    check_request_span(spans_of(spans_file, trace_id, 5), "proc", span_id, STEPS)


def test_a_streaming_request_has_its_responses_as_events_and_the_function_sees_its_trace(
    server: Serve, spans_file: Path
) -> None:
    trace_id, span_id, traceparent = caller()
    url = f"{server.http_url}/v2/models/words/generate_stream"
    with httpx.stream("POST", url, json={"text_input": "hi"}, headers={"traceparent": traceparent}) as response:
        body = response.read().decode()
    seen = [json.loads(event.removeprefix("data: "))["text_output"] for event in body.split("\n\n") if event]
    spans = spans_of(spans_file, trace_id, 4)
    root = check_request_span(spans, "words", span_id, STEPS[:3])
    assert [event["name"] for event in root["events"]] == ["response", "response"]
    assert seen == [f"00-{trace_id}-{root['context']['span_id'][2:]}-01"] * 2  # the function's Request.traceparent


def test_a_failed_request_ends_its_span_with_the_error(server: Serve, spans_file: Path) -> None:
    trace_id, span_id, traceparent = caller()
    url = f"{server.http_url}/v2/models/fails/infer"
    assert httpx.post(url, json=BODY, headers={"traceparent": traceparent}, timeout=WAIT_S).status_code == 500
    spans = spans_of(spans_file, trace_id, 4)
    root = check_request_span(spans, "fails", span_id, STEPS[:3])
    assert root["status"]["status_code"] == "ERROR"
    assert "this model always fails" in root["status"]["description"]
    assert root["attributes"]["error.type"] == "ModelExecutionError"


# -- the trace extension ----------------------------------------------------------------------------------------


def traced_request(serve: Serve, model: str) -> str:
    """Send a request under a new caller's span; the caller's trace id."""
    trace_id, _, traceparent = caller()
    url = f"{serve.http_url}/v2/models/{model}/infer"
    assert httpx.post(url, json=BODY, headers={"traceparent": traceparent}, timeout=WAIT_S).status_code == 200
    return trace_id


def traced_ids(path: Path) -> set[str]:
    return {json.loads(line)["context"]["trace_id"][2:] for line in path.read_text().splitlines()}


def test_the_trace_settings_over_http_as_tritonclient_reads_and_changes_them(server: Serve, spans_file: Path) -> None:
    client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
    try:
        assert client.get_trace_settings() == {
            "trace_level": ["TIMESTAMPS"],
            "trace_rate": "1",
            "trace_count": "-1",
            "log_frequency": "0",
            "trace_mode": "opentelemetry",
            "trace_file": str(spans_file),
        }
        changed = client.update_trace_settings(model_name="add", settings={"trace_level": ["OFF"]})
        assert changed["trace_level"] == ["OFF"]
        assert client.get_trace_settings(model_name="proc")["trace_level"] == ["TIMESTAMPS"]
        assert client.get_trace_settings()["trace_level"] == ["TIMESTAMPS"]
        untraced, traced = traced_request(server, "add"), traced_request(server, "proc")
        spans_of(spans_file, traced, 5)  # exported after the request before it, had that one been traced
        assert untraced not in traced_ids(spans_file)
        # a count of its own: the next request is traced, then none
        changes = {"trace_level": ["TIMESTAMPS"], "trace_count": "1"}
        assert client.update_trace_settings(model_name="add", settings=changes)["trace_count"] == "1"
        first, second = traced_request(server, "add"), traced_request(server, "add")
        later = traced_request(server, "proc")
        spans_of(spans_file, first, 5)
        spans_of(spans_file, later, 5)
        assert second not in traced_ids(spans_file)
        assert client.get_trace_settings(model_name="add")["trace_count"] == "0"
        assert client.get_trace_settings()["trace_count"] == "-1"
    finally:  # the model follows the server's settings again
        cleared = client.update_trace_settings(model_name="add", settings={"trace_level": None, "trace_count": None})
        client.close()
    assert cleared["trace_level"] == ["TIMESTAMPS"] and cleared["trace_count"] == "-1"


def test_the_trace_settings_over_grpc_as_tritonclient_reads_and_changes_them(server: Serve) -> None:
    assert server.grpc_url is not None
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        settings = client.get_trace_settings(as_json=True)["settings"]
        assert settings["trace_level"] == {"value": ["TIMESTAMPS"]}
        assert settings["trace_mode"] == {"value": ["opentelemetry"]}
        try:
            changes = {"trace_rate": "3", "trace_level": ["TIMESTAMPS", "TENSORS"]}
            changed = client.update_trace_settings("proc", changes, as_json=True)
            assert changed["settings"]["trace_rate"] == {"value": ["3"]}
            assert changed["settings"]["trace_level"] == {"value": ["TIMESTAMPS", "TENSORS"]}
            assert client.get_trace_settings("add", as_json=True)["settings"]["trace_rate"] == {"value": ["1"]}
            with pytest.raises(InferenceServerException, match="trace file location can not be updated") as refused:
                client.update_trace_settings(settings={"trace_file": "/tmp/elsewhere.json"})
            assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
            with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
                client.get_trace_settings("nope")
        finally:
            cleared = client.update_trace_settings("proc", {"trace_rate": None, "trace_level": None}, as_json=True)
        assert cleared["settings"]["trace_rate"] == {"value": ["1"]}
        assert cleared["settings"]["trace_level"] == {"value": ["TIMESTAMPS"]}


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v2/trace/setting", {"trace_rate": "0"}, 400, "Unable to parse 'trace_rate'"),
        ("/v2/trace/setting", {"trace_level": "LOUD"}, 400, "level must be 'OFF', 'TIMESTAMPS', 'TENSORS'"),
        ("/v2/trace/setting", {"trace_mode": "triton"}, 400, "trace mode can not be updated"),
        ("/v2/trace/setting", {"rate": "1"}, 400, "unknown trace setting 'rate'"),
        ("/v2/trace/setting", ["trace_rate"], 400, "must be a JSON object"),
        ("/v2/models/nope/trace/setting", {}, 404, "unknown model 'nope'"),
        ("/v2/logging", {"log_verbose_level": "1"}, 400, "expect an integer >= 0 for 'log_verbose_level'"),
        ("/v2/logging", {"log_file": "/tmp/log"}, 400, "log file location can not be updated"),
    ],
)
def test_a_wrong_setting_is_refused_over_http_saying_why(
    server: Serve, path: str, body: Any, status: int, message: str
) -> None:
    answer = httpx.post(f"{server.http_url}{path}", json=body, timeout=WAIT_S)
    assert answer.status_code == status and message in answer.json()["error"], answer.text


# -- the logging extension --------------------------------------------------------------------------------------


def test_the_log_settings_over_both_protocols_as_tritonclient_reads_and_changes_them(server: Serve) -> None:
    assert server.grpc_url is not None
    http_client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
    grpc_client = grpcclient.InferenceServerClient(server.grpc_url)
    initial = {
        "log_file": "",
        "log_info": False,  # Serve's log_level is "warning"
        "log_warning": True,
        "log_error": True,
        "log_verbose_level": 0,
        "log_format": "default",
    }
    try:
        assert http_client.get_log_settings() == initial
        assert http_client.update_log_settings({"log_verbose_level": 1, "log_info": True})["log_verbose_level"] == 1
        settings = grpc_client.get_log_settings(as_json=True)["settings"]
        assert settings["log_verbose_level"] == {"uint32_param": 1} and settings["log_info"] == {"bool_param": True}
        changed = grpc_client.update_log_settings({"log_format": "ISO8601", "log_verbose_level": 0}, as_json=True)
        assert changed["settings"]["log_format"] == {"string_param": "ISO8601"}
        assert http_client.get_log_settings()["log_format"] == "ISO8601"
        with pytest.raises(InferenceServerException, match="invalid argument for log_format") as refused:
            grpc_client.update_log_settings({"log_format": "json"})
        assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
    finally:
        http_client.update_log_settings({k: v for k, v in initial.items() if k != "log_file"})
        http_client.close()
        grpc_client.close()


def test_the_server_lists_the_trace_and_logging_extensions(server: Serve) -> None:
    assert {"trace", "logging"} <= set(httpx.get(f"{server.http_url}/v2", timeout=WAIT_S).json()["extensions"])
    assert server.grpc_url is not None
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        assert {"trace", "logging"} <= set(client.get_server_metadata(as_json=True)["extensions"])


# -- servers of their own ---------------------------------------------------------------------------------------


class _Collector(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP trace endpoint: keeps each export request's body."""

    received: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/traces":
            type(self).received.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, list[bytes]]]:
    _Collector.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Collector.received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(WAIT_S)


def test_a_client_turns_tracing_on_and_spans_go_where_the_otel_variables_say(
    make_serve: Callable[..., Serve], collector: tuple[str, list[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    endpoint, received = collector
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "traced-by-test")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")
    serve = make_serve()  # no Tracing: off until a client turns it on
    serve.bind("add", add, X, Y, config=ModelConfig(max_batch_size=8))
    serve.run()
    settings = httpx.get(f"{serve.http_url}/v2/trace/setting", timeout=WAIT_S).json()
    assert settings["trace_level"] == ["OFF"] and settings["url"] == endpoint
    untraced = traced_request(serve, "add")
    answer = httpx.post(f"{serve.http_url}/v2/trace/setting", json={"trace_level": ["TIMESTAMPS"]}, timeout=WAIT_S)
    assert answer.json()["trace_level"] == ["TIMESTAMPS"]
    traced = traced_request(serve, "add")
    deadline, spans = time.monotonic() + WAIT_S, []
    while len(spans) < 5:
        assert time.monotonic() < deadline, f"the collector has {len(spans)} spans"
        time.sleep(0.02)
        spans, services = [], set()
        for body in list(received):
            request = ExportTraceServiceRequest.FromString(body)
            for resource_spans in request.resource_spans:
                attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                services.add(attributes["service.name"])
                spans += [span for scope in resource_spans.scope_spans for span in scope.spans]
    assert {span.trace_id.hex() for span in spans} == {traced} and untraced != traced
    assert sorted(span.name for span in spans) == sorted(["infer add", *STEPS])
    assert services == {"traced-by-test"}


def test_log_settings_change_what_the_front_writes(
    make_serve: Callable[..., Serve], capfd: pytest.CaptureFixture[str]
) -> None:
    serve = make_serve()
    serve.bind("fails", fails, X, Y, config=ModelConfig(max_batch_size=8))
    serve.run()
    url = f"{serve.http_url}/v2/models/fails/infer"
    assert httpx.post(url, json=BODY, timeout=WAIT_S).status_code == 500
    changes = {"log_verbose_level": 1, "log_format": "ISO8601"}
    assert httpx.post(f"{serve.http_url}/v2/logging", json=changes, timeout=WAIT_S).status_code == 200
    capfd.readouterr()
    assert httpx.post(url, json=BODY, timeout=WAIT_S).status_code == 500  # the front logs its traceback at DEBUG
    deadline = time.monotonic() + WAIT_S
    written = ""
    line = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ DEBUG \d+ dispatcher\.py:\d+\] ", re.MULTILINE)
    while not line.search(written):
        assert time.monotonic() < deadline, written
        time.sleep(0.05)
        written += capfd.readouterr().err


def test_several_fronts_apply_a_setting_everywhere_and_a_restarted_front_takes_them(
    make_serve: Callable[..., Serve],
) -> None:
    serve = make_serve(fronts=2)
    serve.run()
    first, second = connections(serve, 2)  # one to each front
    try:
        assert call(first, "POST", "/v2/trace/setting", {"trace_rate": "5"})[0] == 200
        assert call(second, "POST", "/v2/logging", {"log_verbose_level": 2})[0] == 200
        for connection in (first, second):
            assert call(connection, "GET", "/v2/trace/setting")[1]["trace_rate"] == "5"
            assert call(connection, "GET", "/v2/logging")[1]["log_verbose_level"] == 2
    finally:
        first.close()
        second.close()
    before = front_pids(serve)
    os.kill(before[1], signal.SIGKILL)
    assert wait_until(lambda: front_pids(serve)[1] != before[1] and serve.is_ready(), WAIT_S)
    for connection in connections(serve, 2):
        try:
            assert call(connection, "GET", "/v2/trace/setting")[1]["trace_rate"] == "5"
            assert call(connection, "GET", "/v2/logging")[1]["log_verbose_level"] == 2
        finally:
            connection.close()
