"""What only the gRPC front has: its port options, message size limits, and streams when the server stops.

The behaviour both fronts share is tested once for both in test_both_fronts.py.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from pybind_serve import ConfigurationError, PortInUseError, Serve, Tensor, batch
from pybind_serve.protocol.proto import grpc_service_pb2 as pb
from tests.integration.conftest import WAIT_S, Gate

MakeServe = Callable[..., Serve]


@batch
def identity(x: np.ndarray) -> dict[str, np.ndarray]:
    return {"y": x}


def bind_identity(serve: Serve, fn: Callable[..., Any] = identity) -> Serve:
    serve.bind("identity", fn, inputs=[Tensor("x", np.float32, (-1,))], outputs=[Tensor("y", np.float32, (-1,))])
    return serve


def infer(client: grpcclient.InferenceServerClient, x: np.ndarray) -> np.ndarray:
    infer_input = grpcclient.InferInput("x", list(x.shape), "FP32")
    infer_input.set_data_from_numpy(x)
    return client.infer("identity", [infer_input]).as_numpy("y")


# -- ports -----------------------------------------------------------------------------------------------------


def test_grpc_port_none_serves_http_only(make_serve: MakeServe) -> None:
    serve = bind_identity(make_serve(grpc_port=None)).run()
    assert (serve.grpc_port, serve.grpc_url) == (None, None)
    assert httpx.get(f"{serve.http_url}/v2/health/ready", timeout=WAIT_S).status_code == 200


def test_a_port_taken_by_another_program_is_a_port_in_use_error(make_serve: MakeServe) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        serve = bind_identity(make_serve(grpc_port=port))
        with pytest.raises(PortInUseError, match=f"grpc port {port} on 127.0.0.1 is already in use.*grpc_port=0"):
            serve.run()
    assert not serve.is_ready()


def test_grpc_and_http_cannot_share_a_port(make_serve: MakeServe) -> None:
    first = make_serve().run()
    with pytest.raises(PortInUseError, match=f"grpc port {first.http_port} "):
        make_serve(grpc_port=first.http_port).run()


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"grpc_port": -1}, "grpc_port must be a port number (0 = any free port), got -1"),
        ({"grpc_port": True}, "grpc_port must be a port number (0 = any free port), got True"),
        ({"grpc_max_message_bytes": 0}, "grpc_max_message_bytes must be an int in 1..2147483647, got 0"),
        ({"grpc_max_message_bytes": 1 << 31}, "grpc_max_message_bytes must be an int in 1..2147483647, got 2147483648"),
    ],
)
def test_invalid_grpc_options(options: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Serve(**options)
    assert caught.value.problems == [problem]


# -- message sizes ---------------------------------------------------------------------------------------------


def test_the_default_limit_carries_tensors_far_beyond_grpcs_4_mib(make_serve: MakeServe) -> None:
    serve = bind_identity(make_serve()).run()
    x = np.random.default_rng(0).random((1, 4 << 20), dtype=np.float32)  # 16 MiB each way
    with grpcclient.InferenceServerClient(str(serve.grpc_url)) as client:
        np.testing.assert_array_equal(infer(client, x), x)


def test_messages_over_the_limit_are_refused_both_ways(make_serve: MakeServe) -> None:
    @batch
    def grow(x: np.ndarray) -> dict[str, np.ndarray]:
        return {"y": np.repeat(x, 4, axis=1)}

    serve = bind_identity(make_serve(grpc_max_message_bytes=1 << 20), grow).run()
    with grpcclient.InferenceServerClient(str(serve.grpc_url)) as client:
        with pytest.raises(InferenceServerException) as too_big:
            infer(client, np.zeros((1, 512 << 10), np.float32))  # 2 MiB request
        assert too_big.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
        with pytest.raises(InferenceServerException) as answer_too_big:
            infer(client, np.zeros((1, 128 << 10), np.float32))  # 512 KiB request, 2 MiB response
        assert answer_too_big.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
        np.testing.assert_array_equal(infer(client, np.ones((1, 4), np.float32)), np.ones((1, 16), np.float32))


# -- streams when the server stops -----------------------------------------------------------------------------


def test_stopping_answers_the_stream_requests_in_flight_then_ends_the_stream(make_serve: MakeServe) -> None:
    gate = Gate()

    @batch
    def held(x: np.ndarray) -> dict[str, np.ndarray]:
        gate.hold()
        return {"y": x}

    serve = bind_identity(make_serve(drain_timeout_s=30), held).run()
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client = grpcclient.InferenceServerClient(str(serve.grpc_url))
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        with gate:
            infer_input = grpcclient.InferInput("x", [1, 2], "FP32")
            infer_input.set_data_from_numpy(np.ones((1, 2), np.float32))
            client.async_stream_infer("identity", [infer_input], request_id="in-flight")
            assert gate.entered.wait(WAIT_S)
            started = time.monotonic()
            stopper = threading.Thread(target=serve.stop)
            stopper.start()
        result, error = answers.get(timeout=WAIT_S)
        assert error is None and result.get_response().id == "in-flight"
        _, error = answers.get(timeout=WAIT_S)
        assert "the server is stopping" in error.message()
        stopper.join(WAIT_S)
        assert time.monotonic() - started < 10  # not the 30 s drain timeout: the stream did not hold it up
    finally:
        client.stop_stream()
        client.close()


def test_a_request_that_does_not_decode_is_invalid(make_serve: MakeServe) -> None:
    serve = bind_identity(make_serve()).run()
    malformed = b"\x0a\x05ab"  # a field that claims 5 bytes, and has 2
    expected = "the request is not a well-formed ModelInferRequest: a field of 5 bytes runs past the end of the message"
    with grpc.insecure_channel(str(serve.grpc_url)) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")(malformed, timeout=WAIT_S)
        assert (caught.value.code(), caught.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, expected)
        # On a stream, that request gets its error, and the others their answers.
        good = pb.ModelInferRequest(model_name="identity", id="good")
        good.inputs.add(name="x", datatype="FP32", shape=[1, 2])
        good.raw_input_contents.append(np.ones(2, np.float32).tobytes())
        stream = channel.stream_stream(
            "/inference.GRPCInferenceService/ModelStreamInfer",
            response_deserializer=pb.ModelStreamInferResponse.FromString,
        )
        answers = list(stream(iter([malformed, good.SerializeToString()]), timeout=WAIT_S))
    assert sorted((a.error_message, a.infer_response.id) for a in answers) == [("", "good"), (expected, "")]


def test_system_shared_memory_rpcs_are_unimplemented_while_it_is_off(make_serve: MakeServe) -> None:
    serve = bind_identity(make_serve(http_port=0, grpc_port=0))
    serve.run()
    assert serve.grpc_url is not None
    with grpcclient.InferenceServerClient(serve.grpc_url) as client:
        assert "system_shared_memory" not in client.get_server_metadata(as_json=True)["extensions"]
        for call in (
            client.get_system_shared_memory_status,
            lambda: client.register_system_shared_memory("r", "/r", 16),
            client.unregister_system_shared_memory,
        ):
            with pytest.raises(InferenceServerException, match=r"Serve\(system_shared_memory=True\)") as caught:
                call()
            assert caught.value.status() == "StatusCode.UNIMPLEMENTED"
        client.unregister_cuda_shared_memory()  # none registered: succeeds, as perf_analyzer needs
