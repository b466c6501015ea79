"""`ModelConfig(execution_timeout_s=...)` on streaming (decoupled) models, where it bounds the time between two
responses, in both worker modes; and on a model whose calls finish in time, where it changes nothing.
(tests/faults covers ordinary models that hang, with requests queued behind them.)"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import httpx
import numpy as np
import pytest

from pybind_serve import ModelConfig, Serve, Tensor, batch, sample
from tests.conftest import wait_until

from .conftest import WAIT_S

TEXT_IN, TEXT_OUT = [Tensor("text_input", bytes, (1,))], [Tensor("text_output", bytes, (1,))]
STALL_S = 1.5  # how long `stalls` pauses after its first response
TIMEOUT_S = 0.5


@sample
def stalls(text_input: np.ndarray) -> Iterator[dict[str, np.ndarray]]:
    """One response, then a pause longer than the model's execution timeout, then more responses."""
    yield {"text_output": text_input}
    time.sleep(STALL_S)
    for _ in range(3):
        yield {"text_output": text_input}


@sample
def steady(text_input: np.ndarray) -> Iterator[dict[str, np.ndarray]]:
    """Four responses, 0.2 s apart: longer than the timeout in all, never between two responses."""
    for _ in range(4):
        time.sleep(0.2)
        yield {"text_output": text_input}


@batch
def quick(x: np.ndarray) -> dict[str, np.ndarray]:
    return {"y": x}


def events(response: httpx.Response) -> list[dict[str, object]]:
    body = response.read().decode()
    return [json.loads(event.removeprefix("data: ")) for event in body.split("\n\n") if event]


@pytest.fixture(params=[None, 1], ids=["thread", "process"])
def server(request: pytest.FixtureRequest, make_serve: Callable[..., Serve]) -> Serve:
    config = ModelConfig(max_batch_size=4, decoupled=True, instances=request.param, execution_timeout_s=TIMEOUT_S)
    serve = make_serve()
    serve.bind("stalls", stalls, TEXT_IN, TEXT_OUT, config=config)
    serve.bind("steady", steady, TEXT_IN, TEXT_OUT, config=config)
    serve.run()
    return serve


def test_a_stream_that_pauses_too_long_ends_with_the_timeout_error(
    server: Serve, http: Callable[[Serve], httpx.Client]
) -> None:
    client = http(server)
    started = time.monotonic()
    with client.stream("POST", "/v2/models/stalls/generate_stream", json={"text_input": "hi"}) as response:
        assert response.status_code == 200
        got = events(response)
    assert time.monotonic() - started < STALL_S  # the stream ended at the timeout, not when the function resumed
    assert got[0]["text_output"] == "hi"
    assert "execution_timeout_s=0.5 s" in str(got[1]["error"]) and len(got) == 2
    # The worker is back (replaced, or its function returned and was closed): the model serves again.
    ready = lambda: client.get("/v2/models/stalls/ready").status_code == 200  # noqa: E731
    assert wait_until(ready, WAIT_S)
    with client.stream("POST", "/v2/models/steady/generate_stream", json={"text_input": "ok"}) as response:
        assert [event["text_output"] for event in events(response)] == ["ok"] * 4


def test_a_stream_whose_responses_come_in_time_is_never_cut(
    server: Serve, http: Callable[[Serve], httpx.Client]
) -> None:
    with http(server).stream("POST", "/v2/models/steady/generate_stream", json={"text_input": "a"}) as response:
        assert [event["text_output"] for event in events(response)] == ["a"] * 4


def test_calls_that_finish_in_time_are_served_as_without_a_timeout(make_serve: Callable[..., Serve]) -> None:
    serve = make_serve()
    config = ModelConfig(max_batch_size=8, execution_timeout_s=5.0)
    serve.bind("quick", quick, [Tensor("x", np.float32, (1,))], [Tensor("y", np.float32, (1,))], config=config)
    serve.run()
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [2.0]}]}
    with httpx.Client(base_url=serve.http_url, timeout=WAIT_S) as client:
        for _ in range(20):
            response = client.post("/v2/models/quick/infer", json=body)
            assert response.status_code == 200 and response.json()["outputs"][0]["data"] == [2.0]
