"""Dynamic batching through the real server: batches form, and follow Triton's documented semantics.

Most tests hold the model's first call at a `Gate`, queue requests behind it (waiting on the
``nv_inference_pending_request_count`` gauge, not on sleeps), then open the gate and look at the calls the
function saw, in order.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import numpy as np
import pytest

from pybind_serve import DynamicBatcher, ModelConfig, QueuePolicy, Request, Serve, Tensor, TimeoutAction, batch
from tests.integration.conftest import WAIT_S, Gate, metric, wait_queued

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def recording_model(calls: list[list[float]], gate: Gate | None = None, sleep_s: float = 0.0) -> Callable[..., Any]:
    """A model that appends the rows of each batch it is called with to ``calls`` and answers ``y = 2 x``."""

    @batch
    def model(x: np.ndarray) -> dict[str, np.ndarray]:
        calls.append(x[:, 0].tolist())
        if gate is not None:
            gate.hold()
        time.sleep(sleep_s)
        return {"y": x * 2}

    return model


def start(make_serve: Callable[..., Serve], fn: Callable[..., Any], config: ModelConfig) -> Serve:
    serve = make_serve()
    serve.bind("m", fn, inputs=[Tensor("x", np.float32, (1,))], outputs=[Tensor("y", np.float32, (1,))], config=config)
    return serve.run()


def body(rows: list[float], shape: list[int] | None = None, **parameters: int) -> dict[str, Any]:
    document: dict[str, Any] = {
        "inputs": [{"name": "x", "shape": shape or [len(rows), 1], "datatype": "FP32", "data": rows}]
    }
    if parameters:
        document["parameters"] = parameters
    return document


def infer(client: httpx.Client, rows: list[float], timeout_s: float = WAIT_S, **parameters: int) -> httpx.Response:
    return client.post("/v2/models/m/infer", json=body(rows, **parameters), timeout=timeout_s)


def doubled(response: httpx.Response) -> list[float]:
    """The output rows of a successful response, halved back (the models answer ``2 x``)."""
    assert response.status_code == 200, response.text
    return [v / 2 for v in response.json()["outputs"][0]["data"]]


def queue_in_order(
    pool: ThreadPoolExecutor, client: httpx.Client, serve: Serve, requests: list[tuple[list[float], dict[str, int]]]
) -> list[Future[httpx.Response]]:
    """Send requests one after another, each once the previous one is queued, so their arrival order is known."""
    already = int(metric(serve, "nv_inference_pending_request_count"))
    futures = []
    for n, (rows, parameters) in enumerate(requests, start=1):
        futures.append(pool.submit(infer, client, rows, **parameters))
        wait_queued(serve, already + n)
    return futures


def send_held(pool: ThreadPoolExecutor, client: httpx.Client, gate: Gate) -> Future[httpx.Response]:
    """Send the request (rows [0]) that the model holds at ``gate``; returns once the model holds it."""
    first = pool.submit(infer, client, [0.0])
    assert gate.entered.wait(WAIT_S), "the model never received the first request"
    return first


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}_server", EXAMPLES / name / "server.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- batches form ---------------------------------------------------------------------------------------------


def test_concurrent_requests_share_batches(make_serve: Callable[..., Serve]) -> None:
    sleepy = load_example("sleepy").make_sleepy(20)
    sizes: list[int] = []

    def recorded(requests: list[Request]) -> Any:
        sizes.append(sum(len(r["x"]) for r in requests))
        return sleepy(requests)

    serve = make_serve()
    serve.bind(
        "m",
        recorded,
        inputs=[Tensor("x", np.float32, (4,))],
        outputs=[Tensor("y", np.float32, (4,))],
        config=ModelConfig(max_batch_size=64),
    )
    serve.run()
    rows = np.arange(64 * 4, dtype=np.float32).reshape(64, 1, 4)

    def send(client: httpx.Client, row: np.ndarray) -> httpx.Response:
        document = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": row.ravel().tolist()}]}
        return client.post("/v2/models/m/infer", json=document, timeout=WAIT_S)

    # Threads over one sync client: httpx's AsyncClient sends on warm pooled connections one at a time, ~10 ms
    # apart, which would hide the batching this test is about.
    with ThreadPoolExecutor(64) as pool, httpx.Client(base_url=serve.http_url) as client:
        started = time.monotonic()
        responses = list(pool.map(partial(send, client), rows))
        elapsed = time.monotonic() - started

    for response, row in zip(responses, rows, strict=True):
        assert response.status_code == 200, response.text
        assert response.json()["outputs"][0]["data"] == (row * 2).ravel().tolist()
    assert elapsed < 64 * 0.020 / 2, f"64 requests took {elapsed:.3f} s: not batched"
    assert sum(sizes) == 64 and max(sizes) > 1 and len(sizes) < 64, sizes
    assert metric(serve, "nv_inference_count_total") == 64
    assert metric(serve, "nv_inference_exec_count_total") == len(sizes) < 64
    histogram_count = metric(serve, "pybind_serve_batch_size_count")
    assert histogram_count == len(sizes)
    assert metric(serve, "pybind_serve_batch_size_bucket", le="1") < histogram_count  # batches of > 1 row


def test_requests_of_different_sizes_share_a_batch(make_serve: Callable[..., Serve]) -> None:
    calls: list[list[float]] = []
    gate = Gate()
    serve = start(make_serve, recording_model(calls, gate), ModelConfig(max_batch_size=16))
    sent = [[10.0], [20.0, 21.0, 22.0], [30.0, 31.0]]
    with httpx.Client(base_url=serve.http_url) as client, ThreadPoolExecutor(4) as pool, gate:
        first = send_held(pool, client, gate)
        futures = [pool.submit(infer, client, rows) for rows in sent]
        wait_queued(serve, 3)
        gate.open()
        assert doubled(first.result(WAIT_S)) == [0.0]
        for future, rows in zip(futures, sent, strict=True):
            assert doubled(future.result(WAIT_S)) == rows  # each request gets its own rows back
    assert len(calls) == 2, calls
    assert sorted(calls[1]) == sorted(v for rows in sent for v in rows)


def test_max_batch_size_is_never_exceeded(make_serve: Callable[..., Serve]) -> None:
    calls: list[list[float]] = []
    gate = Gate()
    serve = start(make_serve, recording_model(calls, gate), ModelConfig(max_batch_size=4))
    sent = [[float(n)] * (1 + n % 3) for n in range(1, 25)]  # 1, 2 or 3 rows each: 48 rows
    with httpx.Client(base_url=serve.http_url) as client, ThreadPoolExecutor(len(sent) + 1) as pool, gate:
        first = send_held(pool, client, gate)
        futures = [pool.submit(infer, client, rows) for rows in sent]
        wait_queued(serve, len(sent))
        too_big = infer(client, [1.0] * 5)
        gate.open()
        assert doubled(first.result(WAIT_S)) == [0.0]
        for future, rows in zip(futures, sent, strict=True):
            assert doubled(future.result(WAIT_S)) == rows
    assert too_big.status_code == 400 and "max_batch_size 4" in too_big.json()["error"]
    sizes = [len(call) for call in calls[1:]]
    assert max(sizes) <= 4 and sum(sizes) == 48, sizes
    assert any(len(set(call)) > 1 for call in calls[1:]), calls  # some batch held several requests


def test_max_queue_delay_gathers_requests_into_one_batch(make_serve: Callable[..., Serve]) -> None:
    calls: list[list[float]] = []
    config = ModelConfig(max_batch_size=8, batcher=DynamicBatcher(max_queue_delay_us=200_000))
    serve = start(make_serve, recording_model(calls), config)
    with httpx.Client(base_url=serve.http_url) as client, ThreadPoolExecutor(4) as pool:
        started = time.monotonic()
        futures = []
        for n in range(4):
            futures.append(pool.submit(infer, client, [float(n)]))
            time.sleep(0.01)  # pacing: the requests arrive ~10 ms apart, well inside the 200 ms delay
        for n, future in enumerate(futures):
            assert doubled(future.result(WAIT_S)) == [float(n)]
        elapsed = time.monotonic() - started
    assert len(calls) == 1 and sorted(calls[0]) == [0.0, 1.0, 2.0, 3.0], calls
    assert elapsed >= 0.2, f"the batch was sent after {elapsed:.3f} s, before max_queue_delay_us"


@pytest.mark.parametrize(
    ("preferred", "expected"),
    [((), [1, 5]), ((2,), [1, 2, 2, 1]), ((2, 4), [1, 4, 1])],
    ids=["none", "2", "2-4"],
)
def test_preferred_batch_sizes_cut_batches(
    make_serve: Callable[..., Serve], preferred: tuple[int, ...], expected: list[int]
) -> None:
    calls: list[list[float]] = []
    gate = Gate()
    config = ModelConfig(max_batch_size=8, batcher=DynamicBatcher(preferred_batch_sizes=preferred))
    serve = start(make_serve, recording_model(calls, gate), config)
    with httpx.Client(base_url=serve.http_url) as client, ThreadPoolExecutor(6) as pool, gate:
        first = send_held(pool, client, gate)
        futures = [pool.submit(infer, client, [float(n)]) for n in range(1, 6)]
        wait_queued(serve, 5)
        gate.open()
        for n, future in enumerate([first, *futures]):
            assert doubled(future.result(WAIT_S)) == [float(n)]
    assert [len(call) for call in calls] == expected, calls


def test_batching_off_calls_the_function_with_one_request(make_serve: Callable[..., Serve]) -> None:
    sizes: list[int] = []
    gate = Gate()

    def model(requests: list[Request]) -> list[dict[str, np.ndarray]]:
        sizes.append(len(requests))
        gate.hold()
        return [{"y": r["x"] * 2} for r in requests]

    def send(client: httpx.Client, value: float) -> httpx.Response:
        return client.post("/v2/models/m/infer", json=body([value], shape=[1]), timeout=WAIT_S)

    serve = start(make_serve, model, ModelConfig(batching=False))
    with httpx.Client(base_url=serve.http_url) as client, ThreadPoolExecutor(5) as pool, gate:
        first = pool.submit(send, client, 0.0)
        assert gate.entered.wait(WAIT_S)
        futures = [pool.submit(send, client, float(n)) for n in range(1, 5)]
        wait_queued(serve, 4)
        gate.open()
        for n, future in enumerate([first, *futures]):
            response = future.result(WAIT_S)
            assert response.status_code == 200, response.text
            assert response.json()["outputs"][0] == {"name": "y", "datatype": "FP32", "shape": [1], "data": [2 * n]}
    assert sizes == [1] * 5


# --- scheduling order -------------------------------------------------------------------------------------------


def test_higher_priority_requests_run_first(make_serve: Callable[..., Serve]) -> None:
    calls: list[list[float]] = []
    gate = Gate()
    config = ModelConfig(max_batch_size=1, batcher=DynamicBatcher(priority_levels=2))
    serve = start(make_serve, recording_model(calls, gate), config)
    low = [([20.0], {"priority": 2}), ([21.0], {"priority": 2})]
    high = [([10.0], {"priority": 1}), ([11.0], {"priority": 1})]
    with httpx.Client(base_url=serve.http_url) as client, ThreadPoolExecutor(5) as pool, gate:
        first = send_held(pool, client, gate)
        futures = queue_in_order(pool, client, serve, low + high)
        gate.open()
        for future, (rows, _) in zip([first, *futures], [([0.0], {}), *low, *high], strict=True):
            assert doubled(future.result(WAIT_S)) == rows
    assert calls == [[0.0], [10.0], [11.0], [20.0], [21.0]]


# --- queue policy -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "parameters"),
    [(QueuePolicy(default_timeout_us=100_000), {}), (QueuePolicy(), {"timeout": 100_000})],
    ids=["default_timeout_us", "request-timeout"],
)
def test_queued_request_times_out_with_reject(
    make_serve: Callable[..., Serve], policy: QueuePolicy, parameters: dict[str, int]
) -> None:
    calls: list[list[float]] = []
    gate = Gate()
    config = ModelConfig(batcher=DynamicBatcher(default_queue_policy=policy))
    serve = start(make_serve, recording_model(calls, gate), config)
    with httpx.Client(base_url=serve.http_url) as client, ThreadPoolExecutor(1) as pool, gate:
        first = send_held(pool, client, gate)
        started = time.monotonic()
        late = infer(client, [7.0], **parameters)  # answered while the model is still held
        elapsed = time.monotonic() - started
        gate.open()
        assert doubled(first.result(WAIT_S)) == [0.0]
    assert late.status_code == 503, late.text
    assert "Request timeout expired" in late.json()["error"]
    assert 0.1 <= elapsed < 1.0, f"the timeout answer took {elapsed:.3f} s"
    assert calls == [[0.0]]  # the timed-out request never reached the model


def test_timed_out_request_is_delayed_behind_the_others(make_serve: Callable[..., Serve]) -> None:
    calls: list[list[float]] = []
    gate = Gate()
    policy = QueuePolicy(timeout_action=TimeoutAction.DELAY)
    config = ModelConfig(max_batch_size=1, batcher=DynamicBatcher(default_queue_policy=policy))
    serve = start(make_serve, recording_model(calls, gate), config)
    with httpx.Client(base_url=serve.http_url) as client, ThreadPoolExecutor(3) as pool, gate:
        first = send_held(pool, client, gate)
        expiring, patient = queue_in_order(pool, client, serve, [([1.0], {"timeout": 50_000}), ([2.0], {})])
        time.sleep(0.2)  # pacing: let the first queued request's 50 ms timeout expire
        gate.open()
        assert doubled(first.result(WAIT_S)) == [0.0]
        assert doubled(expiring.result(WAIT_S)) == [1.0]  # delayed, yet served
        assert doubled(patient.result(WAIT_S)) == [2.0]
    assert calls == [[0.0], [2.0], [1.0]]


def test_request_timeout_is_ignored_without_override(make_serve: Callable[..., Serve]) -> None:
    calls: list[list[float]] = []
    gate = Gate()
    policy = QueuePolicy(allow_timeout_override=False)
    config = ModelConfig(batcher=DynamicBatcher(default_queue_policy=policy))
    serve = start(make_serve, recording_model(calls, gate), config)
    with httpx.Client(base_url=serve.http_url) as client, ThreadPoolExecutor(2) as pool, gate:
        first = send_held(pool, client, gate)
        (patient,) = queue_in_order(pool, client, serve, [([1.0], {"timeout": 50_000})])
        time.sleep(0.2)  # pacing: well past the ignored 50 ms timeout
        assert not patient.done()
        wait_queued(serve, 1)
        gate.open()
        assert doubled(first.result(WAIT_S)) == [0.0]
        assert doubled(patient.result(WAIT_S)) == [1.0]
    assert calls == [[0.0], [1.0]]


def test_full_queue_rejects_at_once(make_serve: Callable[..., Serve]) -> None:
    calls: list[list[float]] = []
    gate = Gate()
    config = ModelConfig(batcher=DynamicBatcher(default_queue_policy=QueuePolicy(max_queue_size=2)))
    serve = start(make_serve, recording_model(calls, gate), config)
    with httpx.Client(base_url=serve.http_url) as client, ThreadPoolExecutor(3) as pool, gate:
        first = send_held(pool, client, gate)
        queued = queue_in_order(pool, client, serve, [([1.0], {}), ([2.0], {})])
        started = time.monotonic()
        rejected = infer(client, [3.0])
        elapsed = time.monotonic() - started
        gate.open()
        for n, future in enumerate([first, *queued]):
            assert doubled(future.result(WAIT_S)) == [float(n)]
    assert rejected.status_code == 503, rejected.text
    assert "Exceeds maximum queue size" in rejected.json()["error"]
    assert elapsed < 1.0, f"the rejection took {elapsed:.3f} s"
    assert sorted(v for call in calls for v in call) == [0.0, 1.0, 2.0]


def test_request_of_a_client_that_went_away_is_never_run(make_serve: Callable[..., Serve]) -> None:
    calls: list[list[float]] = []
    gate = Gate()
    serve = start(make_serve, recording_model(calls, gate), ModelConfig())
    with httpx.Client(base_url=serve.http_url) as client, ThreadPoolExecutor(2) as pool, gate:
        first = send_held(pool, client, gate)
        with pytest.raises(httpx.ReadTimeout):
            infer(client, [777.0], timeout_s=0.3)
        wait_queued(serve, 0)  # the server noticed the disconnect and dropped the request
        (later,) = queue_in_order(pool, client, serve, [([5.0], {})])
        gate.open()
        assert doubled(first.result(WAIT_S)) == [0.0]
        assert doubled(later.result(WAIT_S)) == [5.0]
    assert calls == [[0.0], [5.0]]
