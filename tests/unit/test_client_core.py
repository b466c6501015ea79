"""The plans every client runs (`pybind_serve.client.core`), driven here by a fake server: no sockets."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from pybind_serve.client.core import ClientCore, InferOptions
from pybind_serve.client.exchange import HttpReply, HttpRequest, Pause, Plan, Step, drive
from pybind_serve.config import ModelConfig
from pybind_serve.errors import (
    ConfigurationError,
    InvalidInputError,
    ModelNotReadyError,
    ServerUnreachableError,
    UnsupportedError,
)
from pybind_serve.protocol import documents, rest
from pybind_serve.spec import ModelSpec
from pybind_serve.tensor import Tensor

SPEC = ModelSpec(
    "m",
    1,
    (Tensor("x", np.float32, (2,)), Tensor("s", bytes, (1,), optional=True)),
    (Tensor("y", np.float32, (2,)),),
    ModelConfig(max_batch_size=8),
)


class FakeServer:
    """Answers the REST requests of one model as pybind_serve does (the model doubles x), records them, and
    keeps the time: a `Pause` moves the clock."""

    def __init__(self, spec: ModelSpec = SPEC) -> None:
        self.spec, self.now = spec, 0.0
        self.requests: list[HttpRequest] = []
        self.routes: dict[str, Callable[[HttpRequest], HttpReply]] = {
            "/v2/models/m": lambda _: self.json(documents.model_metadata(spec)),
            "/v2/models/m/config": lambda _: self.json(documents.model_config(spec)),
            "/v2/models/m/infer": self.infer,
            "/v2/models/m/ready": lambda _: HttpReply(200, {}, b""),
        }

    def perform(self, step: Step) -> Any:
        if isinstance(step, Pause):
            self.now += step.seconds
            return None
        request = step.request
        assert isinstance(request, HttpRequest)
        self.requests.append(request)
        return step.parse(self.routes[request.path](request))

    def run(self, plan: Plan[Any]) -> Any:
        return drive(plan, self.perform)

    def json(self, document: Any, status: int = 200) -> HttpReply:
        return HttpReply(status, {}, json.dumps(document).encode())

    def infer(self, request: HttpRequest) -> HttpReply:
        parsed = rest.parse_infer_request(
            request.body, int(request.headers["Inference-Header-Content-Length"]), self.spec
        )
        body, length = rest.encode_infer_response(self.spec, parsed, {"y": parsed.inputs["x"] * 2})
        return HttpReply(200, {"Inference-Header-Content-Length": str(length)}, bytearray(body))

    def paths(self) -> list[str]:
        return [request.path for request in self.requests]


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


def core_of(server: FakeServer, **options: Any) -> ClientCore:
    return ClientCore("http://localhost:8000", "m", clock=lambda: server.now, **options)


def test_the_metadata_is_read_once_and_inputs_cast_to_its_datatypes(server: FakeServer) -> None:
    core = core_of(server)
    for _ in range(3):
        y = server.run(core.infer((), {"x": [[1, 2.5]]}, InferOptions(), sample=False))["y"]  # a float64 list
        assert y.dtype == np.float32 and y.tolist() == [[2, 5]]
    assert server.paths() == ["/v2/models/m", *["/v2/models/m/infer"] * 3]


def test_inputs_by_name_by_position_or_as_one_mapping(server: FakeServer) -> None:
    core = core_of(server)
    x = np.ones((1, 2), np.float32)
    for args, named in [((), {"x": x}), ((x,), {}), (({"x": x},), {})]:
        assert server.run(core.infer(args, named, InferOptions(), sample=False))["y"].tolist() == [[2, 2]]
    with pytest.raises(InvalidInputError, match="either by name or positionally"):
        server.run(core.infer((x,), {"s": [[b"a"]]}, InferOptions(), sample=False))
    with pytest.raises(InvalidInputError, match=r"has 2 inputs .*got 3 positional"):
        server.run(core.infer((x, x, x), {}, InferOptions(), sample=False))
    with pytest.raises(InvalidInputError, match="input 'x' is not an array"):
        server.run(core.infer((), {"x": [[1, 2], [3]]}, InferOptions(), sample=False))


def test_a_cast_is_made_only_where_it_is_safe_or_same_kind(server: FakeServer) -> None:
    core = core_of(server)
    with pytest.raises(InvalidInputError, match=r"input 'x' of model 'm' v1: expected FP32 .*got BYTES"):
        server.run(core.infer((), {"x": [["1", "2"]]}, InferOptions(), sample=False))  # left for the server
    server.run(core.infer((), {"x": np.ones((1, 2), np.float64), "s": [[1]]}, InferOptions(), sample=False))
    sent = rest.parse_infer_request(
        server.requests[-1].body, int(server.requests[-1].headers["Inference-Header-Content-Length"]), SPEC
    )
    assert sent.inputs["s"].tolist() == [[b"1"]]  # a BYTES input takes anything, as its text


def test_infer_sample_adds_and_strips_the_batch_axis_of_a_batching_model(server: FakeServer) -> None:
    core = core_of(server)
    y = server.run(core.infer((), {"x": [1, 2]}, InferOptions(), sample=True))["y"]
    assert y.shape == (2,) and y.tolist() == [2, 4]
    assert server.paths() == ["/v2/models/m", "/v2/models/m/config", "/v2/models/m/infer"]


def test_infer_sample_sends_a_model_without_batching_the_sample_as_it_is() -> None:
    server = FakeServer(ModelSpec("m", 1, (Tensor("x", np.float32, (2,)),), SPEC.outputs, ModelConfig(batching=False)))
    y = server.run(core_of(server).infer((), {"x": [1, 2]}, InferOptions(), sample=True))["y"]
    assert y.shape == (2,) and y.tolist() == [2, 4]


def test_without_a_model_config_a_model_batches_when_every_input_starts_with_a_variable_dim(server: FakeServer) -> None:
    server.routes["/v2/models/m/config"] = lambda _: server.json({"error": "Not Found"}, 404)
    core = core_of(server)
    for _ in range(2):
        assert server.run(core.infer((), {"x": [1, 2]}, InferOptions(), sample=True))["y"].shape == (2,)
    assert server.paths().count("/v2/models/m/config") == 1  # the answer is remembered


def test_parameters_priority_headers_and_timeout_of_a_call(server: FakeServer) -> None:
    core = core_of(server, headers={"A": "client", "B": "client"}, timeout_s=7)
    options = InferOptions(parameters={"factor": 3}, headers={"B": "call"}, priority=2, timeout_s=0.5, outputs=["y"])
    server.run(core.infer((), {"x": [[1, 2]]}, options, sample=False))
    request = server.requests[-1]
    assert request.timeout_s == 0.5 and request.headers["A"] == "client" and request.headers["B"] == "call"
    header = json.loads(request.body[: int(request.headers["Inference-Header-Content-Length"])])
    assert header["parameters"] == {"binary_data_output": True, "factor": 3, "priority": 2}
    assert header["outputs"] == [{"name": "y"}]
    assert server.requests[0].timeout_s == 7  # the metadata, with the client's default
    server.run(core.infer((), {"x": [[1, 2]]}, InferOptions(parameters={"factor": np.int64(2)}), sample=False))
    assert b'"factor":2' in server.requests[-1].body  # a numpy scalar goes as the plain value
    with pytest.raises(InvalidInputError, match=r"parameter 'factor' must be a bool, int, float or str, got \[2\]"):
        server.run(core.infer((), {"x": [[1, 2]]}, InferOptions(parameters={"factor": [2]}), sample=False))
    with pytest.raises(InvalidInputError, match="priority must be an int >= 0"):
        server.run(core.infer((), {"x": [[1, 2]]}, InferOptions(priority=-1), sample=False))
    with pytest.raises(ConfigurationError, match="timeout_s must be a positive number"):
        server.run(core.infer((), {"x": [[1, 2]]}, InferOptions(timeout_s=0), sample=False))


def test_wait_for_model_polls_with_backoff_until_ready(server: FakeServer) -> None:
    answers = iter([HttpReply(503, {}, b"")] * 5 + [HttpReply(200, {}, b"")])
    server.routes["/v2/models/m/ready"] = lambda _: next(answers)
    server.run(core_of(server).wait_for_model(10))
    assert server.paths() == ["/v2/models/m/ready"] * 6
    assert server.now == pytest.approx(0.02 + 0.04 + 0.08 + 0.16 + 0.32)


def test_wait_for_model_gives_up_after_timeout_s_and_says_why(server: FakeServer) -> None:
    server.routes["/v2/models/m/ready"] = lambda _: HttpReply(404, {}, b"")
    with pytest.raises(
        ModelNotReadyError, match=r"model 'm' at http://localhost:8000 was not ready within timeout_s=2"
    ):
        server.run(core_of(server).wait_for_model(2))
    assert server.now == pytest.approx(2) and all(r.timeout_s <= 2 for r in server.requests)

    def refuse(request: HttpRequest) -> HttpReply:
        raise ServerUnreachableError("model 'm': cannot reach the server at localhost:8000")

    server.routes["/v2/models/m/ready"], server.now = refuse, 0.0
    with pytest.raises(ServerUnreachableError, match=r"cannot reach .*waited timeout_s=1 for model 'm'"):
        server.run(core_of(server).wait_for_model(1))


def test_options_are_checked_when_the_client_is_made() -> None:
    with pytest.raises(ConfigurationError) as raised:
        ClientCore("http://h:1", "a/b", version=0, timeout_s=-1, headers={"k": 1})  # type: ignore[dict-item]
    assert len(raised.value.problems) == 4
    with pytest.raises(ConfigurationError, match="ftp:// is not supported"):
        ClientCore("ftp://h:1", "m")


def test_streaming_needs_grpc(server: FakeServer) -> None:
    with pytest.raises(UnsupportedError, match="streaming needs gRPC"):
        server.run(core_of(server).stream((), {"x": [1, 2]}, InferOptions(), sample=True))
