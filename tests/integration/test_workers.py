"""Where bound functions run (the binding process, or worker processes), and how failures stay contained."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np

from pybind_serve import ModelConfig, Request, Serve, Tensor, batch

WAIT_S = 10.0  # the most any request or wait of these tests may take
DIE = 666.0  # the input value that makes `whoami` kill its own process

X = [Tensor("x", np.float32, (1,))]
Y = [Tensor("y", np.float32, (1,))]
PID = [Tensor("pid", np.int64, (1,))]


def make_whoami(sleep_s: float = 0.0) -> Callable[..., object]:
    @batch
    def whoami(x: np.ndarray) -> dict[str, np.ndarray]:
        if (x == DIE).any():
            os._exit(1)  # a crash that no exception handler sees, like a segfault in an extension
        time.sleep(sleep_s)
        return {"pid": np.full((len(x), 1), os.getpid(), dtype=np.int64)}

    return whoami


def infer(client: httpx.Client, model: str, value: float) -> httpx.Response:
    body = {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [value]}]}
    return client.post(f"/v2/models/{model}/infer", json=body, timeout=WAIT_S)


def output(response: httpx.Response) -> float:
    assert response.status_code == 200, response.text
    (value,) = response.json()["outputs"][0]["data"]
    return float(value)


def pid_of(response: httpx.Response) -> int:
    return int(output(response))


def test_functions_run_in_the_binding_process_by_default(make_serve: Callable[..., Serve]) -> None:
    serve = make_serve()
    serve.bind("who", make_whoami(), inputs=X, outputs=PID)
    serve.run()
    with httpx.Client(base_url=serve.http_url) as client:
        assert pid_of(infer(client, "who", 1.0)) == os.getpid()


def test_instances_serve_from_separate_worker_processes(make_serve: Callable[..., Serve]) -> None:
    serve = make_serve()
    serve.bind("who", make_whoami(0.2), inputs=X, outputs=PID, config=ModelConfig(instances=2, max_batch_size=1))
    serve.run()
    with ThreadPoolExecutor(6) as pool, httpx.Client(base_url=serve.http_url) as client:
        responses = list(pool.map(lambda n: infer(client, "who", float(n)), range(6)))
    pids = {pid_of(r) for r in responses}
    assert len(pids) == 2, pids  # both instances took a share of the concurrent slow requests
    assert os.getpid() not in pids


def test_a_worker_process_that_dies_is_restarted(make_serve: Callable[..., Serve]) -> None:
    serve = make_serve()
    serve.bind("who", make_whoami(), inputs=X, outputs=PID, config=ModelConfig(instances=1))
    serve.run()
    with httpx.Client(base_url=serve.http_url) as client:
        first_pid = pid_of(infer(client, "who", 1.0))
        assert first_pid != os.getpid()

        died = infer(client, "who", DIE)
        assert died.status_code == 500, died.text
        error = died.json()["error"]
        assert "'who'" in error and "died" in error, error

        deadline = time.monotonic() + WAIT_S
        while (response := infer(client, "who", 2.0)).status_code != 200:
            assert response.status_code == 503, response.text  # not ready while the worker restarts
            assert time.monotonic() < deadline, "the worker was not restarted"
            time.sleep(0.05)
        new_pid = pid_of(response)
        assert new_pid not in (first_pid, os.getpid())
        assert [pid_of(infer(client, "who", 3.0)) for _ in range(3)] == [new_pid] * 3


def test_a_crashing_function_does_not_affect_other_models(make_serve: Callable[..., Serve]) -> None:
    @batch
    def broken(x: np.ndarray) -> dict[str, np.ndarray]:
        raise ValueError("broken on purpose")

    @batch
    def double(x: np.ndarray) -> dict[str, np.ndarray]:
        return {"y": x * 2}

    serve = make_serve()
    serve.bind("broken", broken, inputs=X, outputs=Y)
    serve.bind("double", double, inputs=X, outputs=Y)
    serve.run()
    with httpx.Client(base_url=serve.http_url) as client:
        for n in range(3):
            failed = infer(client, "broken", float(n))
            assert failed.status_code == 500, failed.text
            error = failed.json()["error"]
            assert "'broken'" in error and "ValueError: broken on purpose" in error, error
            assert output(infer(client, "double", float(n))) == 2 * n
        assert client.get("/v2/health/ready", timeout=WAIT_S).status_code == 200


def test_async_and_undecorated_functions_are_served(make_serve: Callable[..., Serve]) -> None:
    @batch
    async def triple(x: np.ndarray) -> dict[str, np.ndarray]:
        await asyncio.sleep(0.001)
        return {"y": x * 3}

    batch_sizes: list[int] = []

    def quadruple(requests: list[Request]) -> list[dict[str, np.ndarray]]:
        batch_sizes.append(len(requests))
        return [{"y": request["x"] * 4} for request in requests]

    serve = make_serve()
    serve.bind("triple", triple, inputs=X, outputs=Y)
    serve.bind("quadruple", quadruple, inputs=X, outputs=Y)
    serve.run()
    with ThreadPoolExecutor(8) as pool, httpx.Client(base_url=serve.http_url) as client:
        tripled = list(pool.map(lambda n: output(infer(client, "triple", float(n))), range(8)))
        quadrupled = list(pool.map(lambda n: output(infer(client, "quadruple", float(n))), range(8)))
    assert tripled == [3.0 * n for n in range(8)]
    assert quadrupled == [4.0 * n for n in range(8)]
    assert sum(batch_sizes) == 8


def test_a_worker_that_dies_on_the_batch_sent_while_it_was_busy(make_serve: Callable[..., Serve]) -> None:
    """The batch sent ahead (ready when the previous answer came back) fails with the worker, and the request
    queued behind it is served by the restarted worker: nothing hangs, nothing is lost."""
    serve = make_serve()
    config = ModelConfig(instances=1, max_batch_size=1)
    serve.bind("who", make_whoami(0.3), inputs=X, outputs=PID, config=config)
    serve.run()
    with httpx.Client(base_url=serve.http_url) as client, ThreadPoolExecutor(3) as pool:
        first_pid = pid_of(infer(client, "who", 1.0))
        slow = pool.submit(infer, client, "who", 1.0)
        time.sleep(0.1)  # the slow request runs; the next two queue behind it
        dies = pool.submit(infer, client, "who", DIE)
        time.sleep(0.05)
        after = pool.submit(infer, client, "who", 2.0)
        assert pid_of(slow.result(WAIT_S)) == first_pid
        died = dies.result(WAIT_S)
        assert died.status_code == 500 and "died" in died.json()["error"], died.text
        response = after.result(WAIT_S)
        deadline = time.monotonic() + WAIT_S
        while response.status_code == 503:  # it may arrive while the worker restarts
            assert time.monotonic() < deadline, "the worker was not restarted"
            time.sleep(0.05)
            response = infer(client, "who", 2.0)
        assert pid_of(response) not in (first_pid, os.getpid())
