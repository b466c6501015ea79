"""The shim's clients (`pytriton.client`) against a real `pybind_serve.Serve`, over HTTP and gRPC: PyTriton's
call conventions, its `TritonModelConfig` view, and its exceptions where PyTriton raises them; the helpers of
`pytriton.client.utils` through tritonclient."""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc
import tritonclient.http
from pytriton.client import (
    AsyncioDecoupledModelClient,
    AsyncioModelClient,
    DecoupledModelClient,
    FuturesModelClient,
    ModelClient,
)
from pytriton.client.exceptions import (
    PyTritonClientClosedError,
    PyTritonClientError,
    PyTritonClientInferenceServerError,
    PyTritonClientInvalidUrlError,
    PyTritonClientModelDoesntSupportBatchingError,
    PyTritonClientQueueFullError,
    PyTritonClientTimeoutError,
    PyTritonClientValueError,
)
from pytriton.client.utils import (
    ModelState,
    TritonUrl,
    create_client_from_url,
    get_model_config,
    get_model_state,
    wait_for_model_ready,
    wait_for_server_ready,
)
from pytriton.client.warnings import NotSupportedTimeoutWarning
from pytriton.model_config.triton_model_config import TensorSpec, TritonModelConfig

import pybind_serve.client as serve_client
from pybind_serve import ModelConfig, Request, Serve, Tensor, batch
from tests.conftest import module_server

PROTOCOLS = ["http", "grpc"]
SLOW_S, SHORT_TIMEOUT_S = 0.6, 0.2  # a call that takes SLOW_S outlasts a client with inference_timeout_s SHORT
F32 = np.float32


# -- the models --------------------------------------------------------------------------------------------------


def echo(requests: list[Request]) -> list[dict[str, np.ndarray]]:
    """``y = a * scale + x-offset`` (a parameter and a forwarded header); sleeps ``delay`` s; refuses a < 0."""
    answers = []
    for request in requests:
        a, delay = request["a"], float(request["delay"].max())
        if (a < 0).any():
            raise ValueError("a must not be negative")
        time.sleep(delay)
        scale = float(request.parameters.get("scale", 1))
        offset = float(request.parameters.get("x-offset", 0))
        answers.append({"y": (a * scale + offset).astype(F32)})
    return answers


@batch
def countdown(a: np.ndarray, n: np.ndarray, delay: np.ndarray) -> Iterator[dict[str, np.ndarray]]:
    """|n| responses ``a * i`` (i = 1, 2, ...), ``delay`` s apart; a negative n then fails."""
    count = int(n.max())
    for i in range(1, abs(count) + 1):
        time.sleep(float(delay.max()))
        yield {"y": a * i}
    if count < 0:
        raise ValueError("the countdown broke")


def bind(serve: Serve) -> None:
    a, y = Tensor("a", F32, (-1,)), Tensor("y", F32, (-1,))
    serve.bind("echo", echo, [a, Tensor("delay", F32, (1,))], [y], config=ModelConfig(max_batch_size=8))
    serve.bind(
        "countdown",
        countdown,
        [a, Tensor("n", np.int32, (1,)), Tensor("delay", F32, (1,))],
        [y],
        config=ModelConfig(max_batch_size=8, decoupled=True),
    )


def warm_up(serve: Serve) -> None:
    with serve_client.ModelClient(serve.http_url, "echo") as client:
        client.infer_sample(a=[1], delay=[0])
    with serve_client.DecoupledModelClient(f"grpc://{serve.grpc_url}", "countdown") as streaming:
        assert len(list(streaming.infer_sample(a=[1], n=[1], delay=[0]))) == 1


@pytest.fixture(scope="module")
def server() -> Iterator[Serve]:
    with module_server(bind, warm_up, http_header_forward_pattern="x-.*", grpc_header_forward_pattern="x-.*") as serve:
        yield serve


@pytest.fixture(params=PROTOCOLS)
def url(request: pytest.FixtureRequest, server: Serve) -> str:
    return server.http_url if request.param == "http" else f"grpc://{server.grpc_url}"


@pytest.fixture
def grpc_url(server: Serve) -> str:
    return f"grpc://{server.grpc_url}"


def sample(value: float = 1.0, delay: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    return np.array([value, value + 1], F32), np.array([delay], F32)


def free_port() -> int:
    from pytriton.check.utils import find_free_port

    return find_free_port()


# -- ModelClient ---------------------------------------------------------------------------------------------------


def test_infer_sample_and_batch_positional_and_named(url: str) -> None:
    with ModelClient(url, "echo", init_timeout_s=10) as client:
        a, delay = sample(2)
        assert client.infer_sample(a, delay)["y"].tolist() == [2, 3]
        assert client.infer_sample(a=a, delay=delay)["y"].tolist() == [2, 3]
        batch_a, batch_delay = np.stack([a, a * 2]), np.zeros((2, 1), F32)
        assert client.infer_batch(batch_a, batch_delay)["y"].tolist() == [[2, 3], [4, 6]]
        assert client.infer_batch(a=batch_a, delay=batch_delay)["y"].shape == (2, 2)


def test_model_config_is_pytritons_view(url: str) -> None:
    with ModelClient(url, "echo", lazy_init=False, init_timeout_s=10) as client:
        config = client.model_config
        assert isinstance(config, TritonModelConfig)
        assert (config.model_name, config.max_batch_size, config.batching, config.decoupled) == ("echo", 8, True, False)
        assert config.inputs == [
            TensorSpec("a", (-1,), np.float32, False),
            TensorSpec("delay", (1,), np.float32, False),
        ]
        assert config.outputs == [TensorSpec("y", (-1,), np.float32, False)]
        assert client.is_batching_supported
    with ModelClient(url, "countdown", init_timeout_s=10) as client:
        assert client.model_config.decoupled


def test_parameters_and_headers_reach_the_model(url: str) -> None:
    with ModelClient(url, "echo", init_timeout_s=10) as client:
        result = client.infer_sample(*sample(1), parameters={"scale": 10}, headers={"x-offset": 5})
        assert result["y"].tolist() == [15, 25]


def test_a_late_answer_raises_timeout(url: str) -> None:
    with ModelClient(url, "echo", init_timeout_s=10, inference_timeout_s=SHORT_TIMEOUT_S) as client:
        client.wait_for_model(10)
        started = time.monotonic()
        with pytest.raises(PyTritonClientTimeoutError):
            client.infer_sample(*sample(delay=SLOW_S))
        assert time.monotonic() - started < SLOW_S


def test_the_models_error_raises_inference_server_error(url: str) -> None:
    with (
        ModelClient(url, "echo", init_timeout_s=10) as client,
        pytest.raises(PyTritonClientInferenceServerError, match="a must not be negative"),
    ):
        client.infer_sample(*sample(-1))


def test_a_server_that_is_not_there_times_out_after_init_timeout() -> None:
    started = time.monotonic()
    with pytest.raises(PyTritonClientTimeoutError):
        ModelClient(f"http://127.0.0.1:{free_port()}", "echo", lazy_init=False, init_timeout_s=0.3)
    assert 0.3 <= time.monotonic() - started < 5


def test_an_unknown_model_times_out_at_the_first_call(url: str) -> None:
    with ModelClient(url, "nobody", init_timeout_s=0.3) as client, pytest.raises(PyTritonClientTimeoutError):
        client.infer_sample(*sample())


def test_pytritons_argument_checks() -> None:
    with pytest.raises(PyTritonClientInvalidUrlError):
        ModelClient("ftp://localhost", "echo")
    client = ModelClient("http://127.0.0.1:1", "echo")
    a, delay = sample()
    with pytest.raises(PyTritonClientValueError):
        client.infer_sample(a, delay=delay)  # positional and named
    with pytest.raises(PyTritonClientValueError):
        client.infer_sample()
    with pytest.raises(PyTritonClientValueError):
        client.infer_sample(a, delay, parameters={"scale": 1.5})  # PyTriton takes str, int and bool only
    client.close()
    with pytest.raises(PyTritonClientClosedError):
        client.infer_sample(a, delay)


def test_model_kind_checks_come_before_any_request() -> None:
    plain = TritonModelConfig("plain", max_batch_size=0, batching=False)
    with (
        ModelClient("http://127.0.0.1:1", "plain", model_config=plain, ensure_model_is_ready=False) as client,
        pytest.raises(PyTritonClientModelDoesntSupportBatchingError),
    ):
        client.infer_batch(np.zeros((1, 2), F32))
    streaming = TritonModelConfig("streaming", decoupled=True)
    with (
        ModelClient("http://127.0.0.1:1", "streaming", model_config=streaming, ensure_model_is_ready=False) as client,
        pytest.raises(PyTritonClientInferenceServerError, match="decoupled"),
    ):
        client.infer_sample(np.zeros(2, F32))


def test_from_existing_client_reuses_the_config(url: str) -> None:
    with (
        ModelClient(url, "echo", lazy_init=False, init_timeout_s=10) as first,
        ModelClient.from_existing_client(first) as second,
    ):
        assert second.model_config is first.model_config
        assert second.infer_sample(*sample(3))["y"].tolist() == [3, 4]


# -- FuturesModelClient --------------------------------------------------------------------------------------------


def test_futures_client(url: str) -> None:
    with FuturesModelClient(url, "echo", init_timeout_s=10) as client:
        assert client.wait_for_model(10).result() is None
        assert client.model_config().result().model_name == "echo"
        futures = [client.infer_sample(*sample(i)) for i in range(4)]
        assert [f.result()["y"][0] for f in futures] == [0, 1, 2, 3]
        with pytest.raises(PyTritonClientInferenceServerError):
            client.infer_sample(*sample(-1)).result()
    with pytest.raises(PyTritonClientClosedError):
        client.infer_sample(*sample())


def test_futures_timeout_and_full_queue(server: Serve) -> None:
    with FuturesModelClient(
        server.http_url, "echo", max_workers=1, max_queue_size=1, non_blocking=True, inference_timeout_s=SHORT_TIMEOUT_S
    ) as client:
        # one call runs (the model holds it SLOW_S), one waits for the thread: no room for a third
        running, waiting = client.infer_sample(*sample(delay=SLOW_S)), client.infer_sample(*sample())
        with pytest.raises(PyTritonClientQueueFullError):
            client.infer_sample(*sample())
        for future in (running, waiting):  # the second waits behind the first in the server's queue too
            with pytest.raises(PyTritonClientTimeoutError):
                future.result()


def test_futures_calls_wait_for_the_model_in_parallel() -> None:
    started = time.monotonic()
    with FuturesModelClient(f"http://127.0.0.1:{free_port()}", "echo", init_timeout_s=0.5) as client:
        futures = [client.infer_sample(*sample()) for _ in range(4)]
        for future in futures:
            with pytest.raises(PyTritonClientTimeoutError):
                future.result()
    assert time.monotonic() - started < 4 * 0.5  # not one wait after the other


# -- AsyncioModelClient --------------------------------------------------------------------------------------------


def test_asyncio_client(url: str) -> None:
    async def main() -> None:
        async with AsyncioModelClient(url, "echo", lazy_init=False, init_timeout_s=10) as client:
            assert (await client.model_config).model_name == "echo"
            answers = await asyncio.gather(*(client.infer_sample(*sample(i)) for i in range(4)))
            assert [answer["y"][0] for answer in answers] == [0, 1, 2, 3]
            batch_answer = await client.infer_batch(a=np.ones((2, 2), F32), delay=np.zeros((2, 1), F32))
            assert batch_answer["y"].shape == (2, 2)
            with pytest.raises(PyTritonClientInferenceServerError):
                await client.infer_sample(*sample(-1))
        async with AsyncioModelClient(url, "echo", inference_timeout_s=SHORT_TIMEOUT_S, init_timeout_s=10) as client:
            with pytest.raises(PyTritonClientTimeoutError):
                await client.infer_sample(*sample(delay=SLOW_S))
        with pytest.raises(PyTritonClientTimeoutError):
            async with AsyncioModelClient(url, "nobody", lazy_init=False, init_timeout_s=0.3):
                pass

    asyncio.run(main())


# -- the decoupled clients -----------------------------------------------------------------------------------------


def countdown_sample(n: int, delay: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.array([1, 2], F32), np.array([n], np.int32), np.array([delay], F32)


def test_decoupled_client_streams(grpc_url: str) -> None:
    with DecoupledModelClient(grpc_url, "countdown", init_timeout_s=10, inference_timeout_s=SHORT_TIMEOUT_S) as client:
        # PyTriton bounds no stream: responses SHORT_TIMEOUT_S apart outlast inference_timeout_s in all
        responses = list(client.infer_sample(*countdown_sample(3, delay=SHORT_TIMEOUT_S / 2)))
        assert [r["y"].tolist() for r in responses] == [[1, 2], [2, 4], [3, 6]]
        a, n, delay = countdown_sample(2)
        batched = list(client.infer_batch(a=a[None], n=n[None], delay=delay[None]))
        assert [r["y"].shape for r in batched] == [(1, 2), (1, 2)]
        broken = client.infer_sample(*countdown_sample(-1))
        with pytest.raises(PyTritonClientInferenceServerError):
            client.infer_sample(*countdown_sample(1))  # one stream at a time
        assert next(broken)["y"].tolist() == [1, 2]
        with pytest.raises(PyTritonClientInferenceServerError, match="the countdown broke"):
            next(broken)
        assert len(list(client.infer_sample(*countdown_sample(1)))) == 1  # the failed stream let go


def test_decoupled_client_refuses_http_and_coupled_models(server: Serve, grpc_url: str) -> None:
    with pytest.raises(PyTritonClientValueError):
        DecoupledModelClient(server.http_url, "countdown")
    with (
        DecoupledModelClient(grpc_url, "echo", init_timeout_s=10) as client,
        pytest.raises(PyTritonClientInferenceServerError, match="not decoupled"),
    ):
        client.infer_sample(*sample())
    with (
        ModelClient(grpc_url, "countdown", init_timeout_s=10) as coupled,
        pytest.raises(PyTritonClientInferenceServerError, match="decoupled"),
    ):
        coupled.infer_sample(*countdown_sample(1))


def test_asyncio_decoupled_client(server: Serve, grpc_url: str) -> None:
    async def main() -> None:
        async with AsyncioDecoupledModelClient(grpc_url, "countdown", lazy_init=False, init_timeout_s=10) as client:
            responses = [r async for r in client.infer_sample(*countdown_sample(2))]
            assert [r["y"].tolist() for r in responses] == [[1, 2], [2, 4]]
            with pytest.raises(PyTritonClientInferenceServerError, match="the countdown broke"):
                [r async for r in client.infer_sample(*countdown_sample(-1))]
        async with AsyncioDecoupledModelClient(grpc_url, "countdown", inference_timeout_s=SHORT_TIMEOUT_S) as client:
            with pytest.raises(PyTritonClientTimeoutError):  # each response must come within inference_timeout_s
                [r async for r in client.infer_sample(*countdown_sample(2, delay=SLOW_S))]
        async with AsyncioDecoupledModelClient(server.http_url, "countdown", init_timeout_s=10) as client:
            with pytest.raises(PyTritonClientValueError):
                [r async for r in client.infer_sample(*countdown_sample(1))]

    asyncio.run(main())


# -- pytriton.client.utils -----------------------------------------------------------------------------------------


def test_triton_url() -> None:
    assert TritonUrl.from_url("localhost") == TritonUrl("http", "localhost", 8000)
    assert TritonUrl.from_url("grpc://[::1]").without_scheme == "[::1]:8001"
    for bad in ("ftp://host", "https://host", "http://host:port", 8000):
        with pytest.raises(PyTritonClientInvalidUrlError):
            TritonUrl.from_url(bad)  # type: ignore[arg-type]


def test_utils_through_tritonclient(url: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning without a timeout to ignore
        client: Any = create_client_from_url(url)
    expected = tritonclient.grpc if url.startswith("grpc") else tritonclient.http
    with client:
        assert isinstance(client, expected.InferenceServerClient)
        wait_for_server_ready(client, timeout_s=10)
        wait_for_model_ready(client, "echo", timeout_s=10)
        config = get_model_config(client, "echo", timeout_s=10)
        assert (config.model_name, config.max_batch_size, [t.name for t in config.inputs or ()]) == (
            "echo",
            8,
            ["a", "delay"],
        )
        assert get_model_config(client, "countdown", timeout_s=10).decoupled
        assert get_model_state(client, "echo") is ModelState.READY
        assert get_model_state(client, "echo", "1") is ModelState.READY
        assert get_model_state(client, "nobody") is ModelState.UNAVAILABLE
        started = time.monotonic()
        with pytest.raises(PyTritonClientTimeoutError):
            wait_for_model_ready(client, "nobody", timeout_s=0.3)
        assert time.monotonic() - started < 5


def test_grpc_client_warns_that_it_ignores_a_network_timeout(grpc_url: str) -> None:
    with pytest.warns(NotSupportedTimeoutWarning), create_client_from_url(grpc_url, network_timeout_s=5):
        pass


def test_general_client_of_a_model_client(url: str) -> None:
    with ModelClient(url, "echo", init_timeout_s=10) as client:
        client.wait_for_server(10)
        assert client._general_client.is_model_ready("echo")


def test_every_client_error_is_a_pytriton_client_error() -> None:
    for error in (PyTritonClientTimeoutError, PyTritonClientInvalidUrlError, PyTritonClientQueueFullError):
        assert issubclass(error, PyTritonClientError)
        assert error("text").message == "text"
