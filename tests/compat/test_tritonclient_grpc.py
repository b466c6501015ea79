"""NVIDIA's gRPC clients (`tritonclient.grpc`, its aio flavour, its streams) and the standard grpc.health.v1
client, against a real `Serve().run()`, unchanged."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from pybind_serve import Serve

A = np.arange(16, dtype=np.float32).reshape(1, 16)
B = np.ones((1, 16), dtype=np.float32)
TIMEOUT_S = 30


@pytest.fixture
def client(grpc_url: str) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(grpc_url) as c:
        yield c


def tensor(name: str, array: np.ndarray, datatype: str) -> grpcclient.InferInput:
    infer_input = grpcclient.InferInput(name, list(array.shape), datatype)
    infer_input.set_data_from_numpy(array)
    return infer_input


def add_sub_inputs(a: np.ndarray = A, b: np.ndarray = B) -> list[grpcclient.InferInput]:
    return [tensor("a", a, "FP32"), tensor("b", b, "FP32")]


# -- health and metadata -------------------------------------------------------------------------------------


def test_health(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("add_sub")
    assert client.is_model_ready("add_sub", "1")
    assert not client.is_model_ready("add_sub", "2")
    assert not client.is_model_ready("no_such_model")


def test_server_metadata(client: grpcclient.InferenceServerClient) -> None:
    metadata = client.get_server_metadata(as_json=True)
    assert metadata["name"] == "pybind_serve"
    assert metadata["version"]
    assert {"model_configuration", "parameters", "statistics"} <= set(metadata["extensions"])
    assert "binary_tensor_data" not in metadata["extensions"]  # a REST extension


def test_model_metadata(client: grpcclient.InferenceServerClient) -> None:
    metadata = client.get_model_metadata("identity")
    assert (metadata.name, list(metadata.versions), metadata.platform) == ("identity", ["1"], "python")
    inputs = {t.name: (t.datatype, list(t.shape)) for t in metadata.inputs}
    assert inputs == {
        "fp32": ("FP32", [-1, -1]),
        "fp16": ("FP16", [-1, -1]),
        "int8": ("INT8", [-1, -1]),
        "text": ("BYTES", [-1, 1]),
        "mask": ("BOOL", [-1, 1]),
    }
    assert [t.name for t in metadata.outputs] == ["fp32_out", "fp16_out", "int8_out", "text_out", "mask_out"]


def test_model_config(client: grpcclient.InferenceServerClient) -> None:
    config = client.get_model_config("add_sub").config
    assert (config.name, config.backend, config.max_batch_size) == ("add_sub", "python", 64)
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [("a", 11, [-1]), ("b", 11, [-1])]
    assert [(t.name, list(t.dims)) for t in config.output] == [("add", [-1]), ("sub", [-1])]
    assert config.HasField("dynamic_batching")
    identity = client.get_model_config("identity", as_json=True)["config"]
    assert {t["name"]: t.get("optional", False) for t in identity["input"]}["mask"] is True
    assert {t["name"]: t["data_type"] for t in identity["input"]}["text"] == "TYPE_STRING"


def test_model_repository_index(client: grpcclient.InferenceServerClient) -> None:
    index = client.get_model_repository_index().models
    assert sorted((m.name, m.version, m.state) for m in index) == [
        ("add_sub", "1", "READY"),
        ("echo", "1", "READY"),
        ("identity", "1", "READY"),
    ]


def test_statistics_count_the_requests(client: grpcclient.InferenceServerClient) -> None:
    def add_sub_stats() -> Any:
        (stats,) = client.get_inference_statistics("add_sub").model_stats
        return stats

    before = add_sub_stats()
    for _ in range(3):
        client.infer("add_sub", add_sub_inputs())
    after = add_sub_stats()
    assert (after.name, after.version) == ("add_sub", "1")
    assert after.inference_stats.success.count == before.inference_stats.success.count + 3
    assert after.inference_stats.success.ns > before.inference_stats.success.ns
    assert after.inference_count == before.inference_count + 3
    assert before.execution_count < after.execution_count <= before.execution_count + 3
    every = client.get_inference_statistics().model_stats
    assert sorted(s.name for s in every) == ["add_sub", "echo", "identity"]


# -- inference -----------------------------------------------------------------------------------------------


def test_add_sub(client: grpcclient.InferenceServerClient) -> None:
    result = client.infer("add_sub", add_sub_inputs(), request_id="req-7", priority=1, timeout=1_000_000)
    np.testing.assert_array_equal(result.as_numpy("add"), A + B)
    np.testing.assert_array_equal(result.as_numpy("sub"), A - B)
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("add_sub", "1", "req-7")


def test_only_the_requested_output_comes_back(client: grpcclient.InferenceServerClient) -> None:
    result = client.infer("add_sub", add_sub_inputs(), outputs=[grpcclient.InferRequestedOutput("sub")])
    np.testing.assert_array_equal(result.as_numpy("sub"), A - B)
    assert result.as_numpy("add") is None


def identity_arrays(with_mask: bool) -> dict[str, tuple[np.ndarray, str]]:
    arrays = {
        "fp32": (np.array([[1.5, -2.0, 3.25], [0.0, 1e-3, -7.0]], dtype=np.float32), "FP32"),
        "fp16": (np.array([[0.5, 1.0], [-65504.0, 2.5]], dtype=np.float16), "FP16"),
        "int8": (np.array([[-128, 0, 127], [1, -1, 2]], dtype=np.int8), "INT8"),
        # Raw contents carry any bytes, UTF-8 or not.
        "text": (np.array([["héllo wörld".encode()], [b"\xff\x00 not utf-8"]], dtype=object), "BYTES"),
    }
    if with_mask:
        arrays["mask"] = (np.array([[False], [True]]), "BOOL")
    return arrays


@pytest.mark.parametrize("with_mask", [True, False], ids=["mask_sent", "mask_filled"])
def test_identity_round_trips_every_dtype(client: grpcclient.InferenceServerClient, with_mask: bool) -> None:
    arrays = identity_arrays(with_mask)
    result = client.infer("identity", [tensor(name, array, datatype) for name, (array, datatype) in arrays.items()])
    for name in ("fp32", "fp16", "int8", "text"):
        array, got = arrays[name][0], result.as_numpy(f"{name}_out")
        assert got.dtype == array.dtype, name
        np.testing.assert_array_equal(got, array)
    expected_mask = [[False], [True]] if with_mask else [[True], [True]]  # fill_optionals(mask=[True])
    assert result.as_numpy("mask_out").tolist() == expected_mask


def test_request_parameters_reach_the_function(client: grpcclient.InferenceServerClient) -> None:
    x = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    parameters = {"tag": "grüße", "unused": 7, "flag": True, "ratio": 0.5}
    result = client.infer("echo", [tensor("x", x, "FP32")], parameters=parameters, priority=1, timeout=1_000_000)
    np.testing.assert_array_equal(result.as_numpy("y"), x)
    assert result.as_numpy("tag").tolist() == [["grüße".encode()]]
    assert result.as_numpy("names").tolist() == [[b"flag,ratio,tag,unused"]]  # priority, timeout: the server's


def test_async_infer_fan_out(client: grpcclient.InferenceServerClient) -> None:
    arrays = [np.full((1, 16), i, dtype=np.float32) for i in range(64)]
    results: queue.Queue[tuple[int, Any, Any]] = queue.Queue()
    for i, a in enumerate(arrays):
        client.async_infer("add_sub", add_sub_inputs(a), lambda result, error, i=i: results.put((i, result, error)))
    answers = [results.get(timeout=TIMEOUT_S) for _ in arrays]
    assert sorted(i for i, _, _ in answers) == list(range(64))
    for i, result, error in answers:
        assert error is None, error
        np.testing.assert_array_equal(result.as_numpy("add"), arrays[i] + B)


def test_the_aio_client(grpc_url: str) -> None:
    async def calls() -> list[Any]:
        async with aioclient.InferenceServerClient(grpc_url) as c:
            assert await c.is_model_ready("add_sub")
            arrays = [np.full((1, 16), i, dtype=np.float32) for i in range(16)]
            results = await asyncio.gather(*(c.infer("add_sub", add_sub_inputs(a)) for a in arrays))
            return [(a, r.as_numpy("add")) for a, r in zip(arrays, results, strict=True)]

    for a, added in asyncio.run(calls()):
        np.testing.assert_array_equal(added, a + B)


def test_stream_of_an_ordinary_model_answers_each_request_once(client: grpcclient.InferenceServerClient) -> None:
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for i in range(32):
            client.async_stream_infer("add_sub", add_sub_inputs(np.full((1, 16), i, np.float32)), request_id=str(i))
        bad = [tensor("a", A.astype(np.int32), "INT32"), tensor("b", B, "FP32")]
        client.async_stream_infer("add_sub", bad, request_id="bad")
        got = [answers.get(timeout=TIMEOUT_S) for _ in range(33)]
    finally:
        client.stop_stream()
    assert answers.empty()
    errors = [error for _, error in got if error is not None]
    assert [e.message() for e in errors] == [
        "input 'a' of model 'add_sub' v1: expected FP32 shape [-1, -1], got INT32 [1, 16]"
    ]
    by_id = {result.get_response().id: result for result, error in got if error is None}
    assert sorted(by_id, key=int) == [str(i) for i in range(32)]
    for i, result in by_id.items():
        np.testing.assert_array_equal(result.as_numpy("add"), np.full((1, 16), int(i), np.float32) + B)


# -- errors --------------------------------------------------------------------------------------------------


def test_unknown_model(client: grpcclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match="unknown model 'no_such_model'") as caught:
        client.infer("no_such_model", add_sub_inputs())
    assert caught.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("no_such_model")
    assert caught.value.status() == "StatusCode.NOT_FOUND"


def test_wrong_dtype_carries_the_servers_message(client: grpcclient.InferenceServerClient) -> None:
    inputs = [tensor("a", A.astype(np.int32), "INT32"), tensor("b", B, "FP32")]
    with pytest.raises(InferenceServerException) as caught:
        client.infer("add_sub", inputs)
    assert caught.value.message() == "input 'a' of model 'add_sub' v1: expected FP32 shape [-1, -1], got INT32 [1, 16]"
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_what_pybind_serve_does_not_have_is_unimplemented(client: grpcclient.InferenceServerClient) -> None:
    for call, match in (
        (lambda: client.load_model("add_sub"), "no model repository"),
        (lambda: client.unload_model("add_sub"), "no model repository"),
        (lambda: client.register_cuda_shared_memory("r", b"aGFuZGxl", 0, 16), "CUDA shared memory is not supported"),
    ):
        with pytest.raises(InferenceServerException, match=match) as caught:
            call()
        assert caught.value.status() == "StatusCode.UNIMPLEMENTED"


def test_the_server_still_serves_after_errors(serve: Serve, client: grpcclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match="missing required input 'b'"):
        client.infer("add_sub", [tensor("a", A, "FP32")])
    assert serve.is_ready()
    np.testing.assert_array_equal(client.infer("add_sub", add_sub_inputs()).as_numpy("add"), A + B)


# -- grpc.health.v1 ------------------------------------------------------------------------------------------


def test_standard_health_check(grpc_url: str) -> None:
    serving = health_pb2.HealthCheckResponse.SERVING
    with grpc.insecure_channel(grpc_url) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            request = health_pb2.HealthCheckRequest(service=service)
            assert health.Check(request, timeout=TIMEOUT_S).status == serving
        with pytest.raises(grpc.RpcError) as caught:
            health.Check(health_pb2.HealthCheckRequest(service="no.Such"), timeout=TIMEOUT_S)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT_S)
        assert next(watch).status == serving
        watch.cancel()
        unknown = health.Watch(health_pb2.HealthCheckRequest(service="no.Such"), timeout=TIMEOUT_S)
        assert next(unknown).status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        unknown.cancel()


def test_health_watch_sees_the_server_stop(grpc_url: str) -> None:
    """Watch ends when its server stops (here a second server of our own, so the module's keeps serving)."""
    server = Serve(http_port=0, grpc_port=0, metrics_port=None)
    seen: list[int] = []
    try:
        server.run()
        assert server.grpc_url is not None
        with grpc.insecure_channel(server.grpc_url) as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=TIMEOUT_S)
            seen.append(next(watch).status)
            stopper = threading.Thread(target=server.stop)
            stopper.start()
            seen += [answer.status for answer in watch]  # ends when the server stops
            stopper.join(TIMEOUT_S)
    finally:
        server.stop()
    assert seen == [health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING]
