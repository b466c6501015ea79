"""``ModelConfig(concurrency=k)``: a worker runs up to k batches of an async function at once, so an I/O-bound
function overlaps its waits; each batch keeps its execution timeout (past it, only that batch is cancelled);
a plain function still runs one batch at a time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from pybind_serve import ModelConfig, Serve, Tensor, batch

from .conftest import WAIT_S

X, Y = [Tensor("x", np.float32, (1,))], [Tensor("y", np.float32, (1,))]
WAIT = 0.4  # how long each call of the functions below waits
HANG = -1.0  # the input value that makes `remote` wait for ever


@batch
async def remote(x: np.ndarray) -> dict[str, np.ndarray]:
    """An I/O-bound model: waits (as for another service), then answers."""
    await asyncio.sleep(3600 if (x == HANG).any() else WAIT)
    return {"y": x}


@batch
def blocking(x: np.ndarray) -> dict[str, np.ndarray]:
    time.sleep(WAIT)
    return {"y": x}


def infer(url: str, model: str, value: float) -> httpx.Response:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [value]}]}
    return httpx.post(f"{url}/v2/models/{model}/infer", json=body, timeout=WAIT_S)


def eight_calls(url: str, model: str) -> float:
    """Seconds for 8 concurrent one-row requests (max_batch_size 1: one batch each)."""
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda n: infer(url, model, float(n)), range(8)))
    assert [a.json()["outputs"][0]["data"] for a in answers] == [[float(n)] for n in range(8)]
    return time.monotonic() - started


@pytest.mark.parametrize("instances", [None, 1], ids=["thread", "process"])
def test_an_async_function_runs_concurrency_batches_at_once(
    make_serve: Callable[..., Serve], instances: int | None
) -> None:
    serve = make_serve()
    serve.bind("four", remote, X, Y, config=ModelConfig(max_batch_size=1, concurrency=4, instances=instances))
    serve.bind("one", remote, X, Y, config=ModelConfig(max_batch_size=1, instances=instances))
    serve.bind("plain", blocking, X, Y, config=ModelConfig(max_batch_size=1, concurrency=4, instances=instances))
    serve.run()
    assert eight_calls(serve.http_url, "four") < 3 * WAIT  # two rounds of four
    assert eight_calls(serve.http_url, "one") >= 8 * WAIT  # one after the other
    assert eight_calls(serve.http_url, "plain") >= 8 * WAIT  # a plain function: one at a time, whatever it says


@pytest.mark.parametrize("instances", [None, 1], ids=["thread", "process"])
def test_past_its_execution_timeout_only_that_batch_is_cancelled(
    make_serve: Callable[..., Serve], instances: int | None
) -> None:
    serve = make_serve()
    config = ModelConfig(max_batch_size=1, concurrency=4, instances=instances, execution_timeout_s=1.0)
    serve.bind("remote", remote, X, Y, config=config)
    serve.run()
    with ThreadPoolExecutor(4) as pool:
        hung = pool.submit(infer, serve.http_url, "remote", HANG)
        time.sleep(0.1)
        others = [pool.submit(infer, serve.http_url, "remote", float(n)) for n in range(3)]
        assert [o.result().status_code for o in others] == [200] * 3  # served beside the hung batch
        answer = hung.result()
    assert answer.status_code == 504 and "execution_timeout_s=1 s; the batch was cancelled" in answer.text
    assert eight_calls(serve.http_url, "remote") < 3 * WAIT  # every slot is free again, the worker the same
    with httpx.Client(base_url=serve.http_url, timeout=WAIT_S) as client:
        assert client.get("/v2/models/remote/ready").status_code == 200
