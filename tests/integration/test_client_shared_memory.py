"""The clients' shared-memory transport (``shared_memory=True``) against a real `Serve` with system shared memory
on, every client class over HTTP and gRPC: inputs through a registered region, fixed-size outputs read back from
it, the rest through the response; regions reused, grown, unregistered on close, and never left in /dev/shm."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator

import httpx
import numpy as np
import pytest

from pybind_serve import ModelConfig, Serve, Tensor, batch
from pybind_serve.client import AsyncModelClient, FuturesModelClient, ModelClient
from pybind_serve.errors import UnsupportedError
from tests.conftest import module_server
from tests.integration.conftest import WAIT_S

PROTOCOLS = ["http", "grpc"]


@batch
def double(x: np.ndarray) -> dict[str, np.ndarray]:
    return {"y": x * 2}


@batch
def add_sub(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    return {"add": a + b, "sub": a - b}


@batch
def shout(s: np.ndarray) -> dict[str, np.ndarray]:
    return {"t": np.vectorize(lambda b: b.upper(), otypes=[object])(s)}


def bind(serve: Serve) -> None:
    config = ModelConfig(max_batch_size=8)
    serve.bind("double", double, [Tensor("x", np.float32, (256,))], [Tensor("y", np.float32, (256,))], config=config)
    vector = [Tensor("a", np.float32, (-1,)), Tensor("b", np.float32, (-1,))]
    outputs = [Tensor("add", np.float32, (-1,)), Tensor("sub", np.float32, (-1,))]
    serve.bind("add_sub", add_sub, inputs=vector, outputs=outputs, config=config)
    serve.bind("shout", shout, [Tensor("s", bytes, (-1,))], [Tensor("t", bytes, (-1,))], config=config)


def warm_up(serve: Serve) -> None:
    for model, inputs in (("double", {"x": np.zeros(256)}), ("add_sub", {"a": [0], "b": [0]}), ("shout", {"s": [b""]})):
        with ModelClient(serve.http_url, model) as client:
            client.infer_sample(**inputs)


@pytest.fixture(scope="module")
def serve() -> Iterator[Serve]:
    with module_server(bind, warm_up, system_shared_memory=True) as server:
        yield server


@pytest.fixture(params=PROTOCOLS)
def url(request: pytest.FixtureRequest, serve: Serve) -> str:
    return serve.http_url if request.param == "http" else f"grpc://{serve.grpc_url}"


def client_segments() -> list[str]:
    return [name for name in os.listdir("/dev/shm") if name.startswith(f"pbs_client_{os.getpid()}_")]


def registered(serve: Serve) -> list[str]:
    regions = httpx.get(f"{serve.http_url}/v2/systemsharedmemory/status", timeout=WAIT_S).json()
    return [region["name"] for region in regions]


X = np.arange(256, dtype=np.float32)


def test_model_client_uses_one_region_and_cleans_it_up(serve: Serve, url: str) -> None:
    with ModelClient(url, "double", shared_memory=True, timeout_s=WAIT_S) as client:
        np.testing.assert_array_equal(client.infer_sample(x=X)["y"], X * 2)
        batch_of_3 = np.stack([X, X + 1, X + 2])
        np.testing.assert_array_equal(client.infer_batch(x=batch_of_3)["y"], batch_of_3 * 2)
        names = registered(serve)
        assert len(names) == 1 and names[0].startswith("pbs_client_")  # reused by the second call
        assert client_segments() == []  # unlinked once the server mapped it: a killed client leaves nothing
    assert registered(serve) == []


def test_outputs_of_variable_size_and_bytes_come_back_in_the_response(serve: Serve, url: str) -> None:
    with ModelClient(url, "add_sub", shared_memory=True, timeout_s=WAIT_S) as client:
        out = client.infer_sample(a=np.ones(5, np.float32), b=np.full(5, 2, np.float32))
        np.testing.assert_array_equal(out["add"], np.full(5, 3, np.float32))
        np.testing.assert_array_equal(out["sub"], np.full(5, -1, np.float32))
    with ModelClient(url, "shout", shared_memory=True, timeout_s=WAIT_S) as client:
        assert client.infer_sample(s=[b"quiet", b"please"])["t"].tolist() == [b"QUIET", b"PLEASE"]
    assert registered(serve) == []


def test_a_larger_call_takes_a_larger_region(serve: Serve, url: str) -> None:
    with ModelClient(url, "add_sub", shared_memory=True, timeout_s=WAIT_S) as client:
        client.infer_sample(a=np.ones(4, np.float32), b=np.ones(4, np.float32))
        big = np.ones(256 << 10, np.float32)  # 1 MiB per input: more than the first region holds
        np.testing.assert_array_equal(client.infer_sample(a=big, b=big)["add"], big * 2)
        assert len(registered(serve)) == 2
    assert registered(serve) == []


def test_futures_client_runs_concurrent_calls_on_regions_of_their_own(serve: Serve, url: str) -> None:
    with FuturesModelClient(url, "double", shared_memory=True, max_workers=4, timeout_s=WAIT_S) as client:
        futures = [client.infer_sample(x=X + i) for i in range(16)]
        for i, future in enumerate(futures):
            np.testing.assert_array_equal(future.result(WAIT_S)["y"], (X + i) * 2)
        assert 1 <= len(registered(serve)) <= 4
    assert registered(serve) == []
    assert client_segments() == []


def test_async_client(serve: Serve, url: str) -> None:
    async def main() -> None:
        async with AsyncModelClient(url, "double", shared_memory=True, timeout_s=WAIT_S) as client:
            results = await asyncio.gather(*(client.infer_sample(x=X + i) for i in range(8)))
            for i, result in enumerate(results):
                np.testing.assert_array_equal(result["y"], (X + i) * 2)

    asyncio.run(main())
    assert registered(serve) == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_server_without_shared_memory_says_how_to_turn_it_on(make_serve: Callable[..., Serve], protocol: str) -> None:
    serve = make_serve()
    serve.bind("double", double, [Tensor("x", np.float32, (256,))], [Tensor("y", np.float32, (256,))])
    serve.run()
    url = serve.http_url if protocol == "http" else f"grpc://{serve.grpc_url}"
    client = ModelClient(url, "double", shared_memory=True, timeout_s=WAIT_S)
    with client, pytest.raises(UnsupportedError, match=r"Serve\(system_shared_memory=True\)"):
        client.infer_sample(x=X)
    assert client_segments() == []
