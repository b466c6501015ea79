"""Restricted endpoint groups, the access token and header forwarding, over both protocols (Triton's semantics:
HTTP 403 / gRPC UNAVAILABLE with "expecting header '<key>'"), against a real server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import pytest

from pybind_serve import ConfigurationError, ModelConfig, Request, Restriction, Serve, Tensor, batch
from pybind_serve.client import ModelClient
from pybind_serve.errors import UnavailableError
from pybind_serve.protocol.proto import grpc_service_pb2 as pb
from pybind_serve.protocol.proto import grpc_service_pb2_grpc as pb_grpc
from pybind_serve.protocol.proto import health_pb2, health_pb2_grpc
from pybind_serve.security import GROUPS, TOKEN_GROUPS, TOKEN_HEADER
from tests.conftest import module_server
from tests.integration.conftest import WAIT_S

X = [Tensor("x", np.float32, (-1,))]
INFER = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}]}


@batch
def double(x: np.ndarray) -> dict[str, np.ndarray]:
    return {"y": x * 2}


def _setup(serve: Serve) -> None:
    serve.bind("double", double, X, [Tensor("y", np.float32, (-1,))], config=ModelConfig(max_batch_size=4))


def _warm_up(serve: Serve) -> None:
    url, headers = f"{serve.http_url}/v2/models/double/infer", {"key-inference": "secret-inference"}
    assert httpx.post(url, json=INFER, headers=headers, timeout=WAIT_S).status_code == 200


def key_of(group: str) -> str:
    return f"key-{group}"


@pytest.fixture(scope="module")
def server() -> Iterator[Serve]:
    """Every group restricted, each by a header of its own."""
    restricted = [Restriction((group,), key_of(group), f"secret-{group}") for group in GROUPS]
    with module_server(_setup, _warm_up, restricted=restricted, system_shared_memory=True) as serve:
        yield serve


HTTP_CALLS = {
    "health": ("GET", "/v2/health/ready", None),
    "metadata": ("GET", "/v2/models/double", None),
    "inference": ("POST", "/v2/models/double/infer", INFER),
    "shared-memory": ("GET", "/v2/systemsharedmemory/status", None),
    "model-config": ("GET", "/v2/models/double/config", None),
    "model-repository": ("POST", "/v2/repository/index", {}),
    "statistics": ("GET", "/v2/models/stats", None),
    "trace": ("GET", "/v2/trace/setting", None),
    "logging": ("GET", "/v2/logging", None),
}


@pytest.mark.parametrize("group", GROUPS)
def test_each_restricted_group_needs_its_header_over_http(server: Serve, group: str) -> None:
    method, path, body = HTTP_CALLS[group]
    url = f"{server.http_url}{path}"
    refused = httpx.request(method, url, json=body, timeout=WAIT_S)
    assert refused.status_code == 403
    assert refused.json() == {"error": f"This API is restricted, expecting header '{key_of(group)}'"}
    wrong = httpx.request(method, url, json=body, headers={key_of(group): "guess"}, timeout=WAIT_S)
    assert wrong.status_code == 403
    served = httpx.request(method, url, json=body, headers={key_of(group): f"secret-{group}"}, timeout=WAIT_S)
    assert served.status_code == 200, served.text


def grpc_calls(stub: Any, health: Any) -> dict[str, Callable[[list[tuple[str, str]]], Any]]:
    infer = pb.ModelInferRequest(model_name="double")
    tensor = infer.inputs.add(name="x", datatype="FP32", shape=[1, 2])
    tensor.contents.fp32_contents.extend([1.0, 2.0])
    return {
        "health": lambda md: stub.ServerReady(pb.ServerReadyRequest(), metadata=md, timeout=WAIT_S),
        "metadata": lambda md: stub.ServerMetadata(pb.ServerMetadataRequest(), metadata=md, timeout=WAIT_S),
        "inference": lambda md: stub.ModelInfer(infer, metadata=md, timeout=WAIT_S),
        "shared-memory": lambda md: stub.SystemSharedMemoryStatus(
            pb.SystemSharedMemoryStatusRequest(), metadata=md, timeout=WAIT_S
        ),
        "model-config": lambda md: stub.ModelConfig(pb.ModelConfigRequest(name="double"), metadata=md, timeout=WAIT_S),
        "model-repository": lambda md: stub.RepositoryIndex(pb.RepositoryIndexRequest(), metadata=md, timeout=WAIT_S),
        "statistics": lambda md: stub.ModelStatistics(pb.ModelStatisticsRequest(), metadata=md, timeout=WAIT_S),
        "trace": lambda md: stub.TraceSetting(pb.TraceSettingRequest(), metadata=md, timeout=WAIT_S),
        "logging": lambda md: stub.LogSettings(pb.LogSettingsRequest(), metadata=md, timeout=WAIT_S),
        "grpc-health": lambda md: health.Check(health_pb2.HealthCheckRequest(), metadata=md, timeout=WAIT_S),
    }


@pytest.fixture(scope="module")
def channel(server: Serve) -> Iterator[grpc.Channel]:
    assert server.grpc_url is not None
    with grpc.insecure_channel(server.grpc_url) as channel:
        yield channel


@pytest.mark.parametrize(
    "call", ["health", "metadata", "inference", "shared-memory", "model-config", "model-repository", "statistics",
             "trace", "logging", "grpc-health"]
)  # fmt: skip
def test_each_restricted_group_needs_its_metadata_over_grpc(server: Serve, channel: grpc.Channel, call: str) -> None:
    calls = grpc_calls(pb_grpc.GRPCInferenceServiceStub(channel), health_pb2_grpc.HealthStub(channel))
    group = "health" if call == "grpc-health" else call
    with pytest.raises(grpc.RpcError) as refused:
        calls[call]([])
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert refused.value.details() == f"This protocol is restricted, expecting header '{key_of(group)}'"
    calls[call]([(key_of(group), f"secret-{group}")])  # served


def test_the_stream_infer_call_is_restricted_too(server: Serve, channel: grpc.Channel) -> None:
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    request = pb.ModelInferRequest(model_name="double")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 1]).contents.fp32_contents.append(3.0)
    with pytest.raises(grpc.RpcError) as refused:
        list(stub.ModelStreamInfer(iter([request]), timeout=WAIT_S))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    answers = list(stub.ModelStreamInfer(iter([request]), metadata=[("key-inference", "secret-inference")]))
    assert len(answers) == 1 and not answers[0].error_message


def test_the_access_token_guards_the_state_changing_groups_and_our_client_sends_it(
    make_serve: Callable[..., Serve],
) -> None:
    serve = make_serve(access_token=True, system_shared_memory=True)
    _setup(serve)
    serve.run()
    token = serve.access_token
    assert isinstance(token, str) and len(token) >= 32
    assert set(TOKEN_GROUPS) == {"shared-memory", "model-repository", "statistics", "trace", "logging"}
    stats = f"{serve.http_url}/v2/models/stats"
    assert httpx.get(stats, timeout=WAIT_S).status_code == 403
    assert httpx.get(stats, headers={TOKEN_HEADER: token}, timeout=WAIT_S).status_code == 200
    assert httpx.post(f"{serve.http_url}/v2/models/double/infer", json=INFER, timeout=WAIT_S).status_code == 200
    for open_path in ("/v2/health/ready", "/v2", "/v2/models/double", "/v2/models/double/config"):  # not guarded
        assert httpx.get(f"{serve.http_url}{open_path}", timeout=WAIT_S).status_code == 200, open_path
    for url in (serve.http_url, f"grpc://{serve.grpc_url}"):
        with ModelClient(url, "double", shared_memory=True, access_token=token) as client:  # registers regions
            assert client.infer_batch(x=np.ones((1, 2), np.float32))["y"].tolist() == [[2.0, 2.0]]
        with (
            ModelClient(url, "double", shared_memory=True) as client,
            pytest.raises(UnavailableError, match=r"expecting header 'triton-access-token'"),
        ):
            client.infer_batch(x=np.ones((1, 2), np.float32))


def test_a_given_token_is_used_as_is(make_serve: Callable[..., Serve]) -> None:
    assert make_serve(access_token="my-token").access_token == "my-token"
    assert make_serve().access_token is None


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"restricted": [Restriction(("stats",), "k", "v")]}, "unknown endpoint group 'stats'"),
        (
            {"restricted": [Restriction(("health",), "a", "1"), Restriction(("health",), "b", "2")]},
            "endpoint group 'health' is restricted more than once",
        ),
        (
            {"restricted": [Restriction(("statistics",), "a", "1")], "access_token": True},
            "endpoint group 'statistics' is restricted more than once",
        ),
        ({"http_header_forward_pattern": "("}, "http_header_forward_pattern must be a regular expression"),
    ],
)
def test_bad_restrictions_are_refused_when_the_server_is_built(options: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        Serve(**options)


def who(requests: list[Request]) -> list[dict[str, np.ndarray]]:
    return [{"user": np.array([str(r.parameters.get("x-fwd-user", "-")).encode()], dtype=object)} for r in requests]


@pytest.fixture
def forwarding(make_serve: Callable[..., Serve]) -> Serve:
    pattern = "^(x-fwd-|priority$)"
    serve = make_serve(http_header_forward_pattern=pattern, grpc_header_forward_pattern=pattern)
    serve.bind("who", who, X, [Tensor("user", bytes, (1,))])
    serve.run()
    return serve


def test_headers_matching_the_pattern_reach_the_function_over_http(forwarding: Serve) -> None:
    url = f"{forwarding.http_url}/v2/models/who/infer"
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}]}
    answer = httpx.post(url, json=body, headers={"X-Fwd-User": "alice", "X-Other": "no"}, timeout=WAIT_S)
    assert answer.status_code == 200 and answer.json()["outputs"][0]["data"] == ["alice"]
    assert httpx.post(url, json=body, timeout=WAIT_S).json()["outputs"][0]["data"] == ["-"]
    reserved = httpx.post(url, json=body, headers={"Priority": "1"}, timeout=WAIT_S)
    assert reserved.status_code == 400 and "reserved parameter" in reserved.json()["error"]


def test_metadata_matching_the_pattern_reaches_the_function_over_grpc(forwarding: Serve) -> None:
    assert forwarding.grpc_url is not None
    with grpc.insecure_channel(forwarding.grpc_url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = pb.ModelInferRequest(model_name="who")
        request.inputs.add(name="x", datatype="FP32", shape=[1, 1]).contents.fp32_contents.append(1.0)
        answer = stub.ModelInfer(request, metadata=[("x-fwd-user", "bob")], timeout=WAIT_S)
        assert answer.raw_output_contents[0][4:] == b"bob"
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelInfer(request, metadata=[("priority", "1")], timeout=WAIT_S)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
