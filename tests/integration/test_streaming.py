"""Decoupled (streaming) models over HTTP: Triton's generate / generate_stream, and /infer when one response
comes; requests of one batch that end at different steps; a client that goes away stops the generator."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import numpy as np
import pytest

from pybind_serve import STREAM_END, DynamicBatcher, ModelConfig, Request, Serve, Tensor, sample
from tests.conftest import wait_until

from .conftest import WAIT_S

BATCH_SIZES: list[int] = []  # the size of every batch countdown ran
STEPS = {"endless": 0}  # how many steps endless has made, across all its streams
STEPS_LOCK = threading.Lock()


def countdown(requests: list[Request]) -> Iterator[list[object]]:
    """Undecorated streaming: request i answers n_i, n_i - 1, ..., 1 (one per step), then its stream ends."""
    BATCH_SIZES.append(len(requests))
    left = [int(request["n"].item()) for request in requests]
    while any(n >= 0 for n in left):
        step: list[object] = []
        for i, n in enumerate(left):
            step.append({"value": np.array([[n]], dtype=np.int32)} if n > 0 else STREAM_END if n == 0 else None)
            left[i] -= 1
        time.sleep(0.01)
        yield step


@sample
def endless(text_input: np.ndarray) -> Iterator[dict[str, np.ndarray]]:
    """Streams the prompt back forever, one response every 10 ms: only a client that goes away stops it."""
    while True:
        with STEPS_LOCK:
            STEPS["endless"] += 1
        time.sleep(0.01)
        yield {"text_output": text_input}


@sample
def silent(text_input: np.ndarray) -> Iterator[dict[str, np.ndarray]]:
    """Zero responses."""
    yield from ()


@sample
def broken(text_input: np.ndarray) -> Iterator[dict[str, np.ndarray]]:
    """One response, then a crash."""
    yield {"text_output": text_input}
    raise RuntimeError("the generator broke")


TEXT_IN, TEXT_OUT = [Tensor("text_input", bytes, (1,))], [Tensor("text_output", bytes, (1,))]
DECOUPLED = ModelConfig(max_batch_size=8, decoupled=True)


@pytest.fixture
def server(make_serve: Callable[..., Serve]) -> Serve:
    serve = make_serve()
    config = ModelConfig(max_batch_size=8, decoupled=True, batcher=DynamicBatcher(max_queue_delay_us=100_000))
    serve.bind("countdown", countdown, [Tensor("n", np.int32, (1,))], [Tensor("value", np.int32, (1,))], config=config)
    for name, fn in (("endless", endless), ("silent", silent), ("broken", broken)):
        serve.bind(name, fn, TEXT_IN, TEXT_OUT, config=DECOUPLED)
    serve.run()
    return serve


def events(response: httpx.Response) -> list[dict[str, object]]:
    """The JSON documents of a server-sent events body."""
    body = response.read().decode()
    assert body.endswith("\n\n") or not body, body
    return [json.loads(event.removeprefix("data: ")) for event in body.split("\n\n") if event]


def test_generate_stream_sends_each_response_as_an_event(server: Serve, http: Callable[[Serve], httpx.Client]) -> None:
    with http(server).stream("POST", "/v2/models/countdown/generate_stream", json={"n": 3, "id": "a"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        got = events(response)
    assert [(event["id"], event["value"]) for event in got] == [("a", 3), ("a", 2), ("a", 1)]
    assert got[0]["model_name"] == "countdown" and got[0]["model_version"] == "1"


def test_requests_of_one_batch_end_at_their_own_step(server: Serve, http: Callable[[Serve], httpx.Client]) -> None:
    client, answers = http(server), {}
    BATCH_SIZES.clear()

    def ask(n: int) -> None:
        with client.stream("POST", "/v2/models/countdown/generate_stream", json={"n": n}) as response:
            answers[n] = [event["value"] for event in events(response)]

    threads = [threading.Thread(target=ask, args=(n,)) for n in (1, 4, 2, 0)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    assert answers == {1: [1], 4: [4, 3, 2, 1], 2: [2, 1], 0: []}
    assert max(BATCH_SIZES) > 1, f"the four requests were never batched: {BATCH_SIZES}"


def test_generate_answers_a_single_response(server: Serve, http: Callable[[Serve], httpx.Client]) -> None:
    response = http(server).post("/v2/models/countdown/generate", json={"n": 1})
    assert response.status_code == 200, response.text
    assert response.json() == {"model_name": "countdown", "model_version": "1", "value": 1}


@pytest.mark.parametrize("n", [0, 2])
def test_generate_refuses_a_stream_of_other_than_one(
    server: Serve, http: Callable[[Serve], httpx.Client], n: int
) -> None:
    response = http(server).post("/v2/models/countdown/generate", json={"n": n})
    assert response.status_code == 400
    assert f"{n} responses" in response.json()["error"] and "generate_stream" in response.json()["error"]


def test_infer_on_a_decoupled_model_answers_its_single_response(
    server: Serve, http: Callable[[Serve], httpx.Client]
) -> None:
    request = {"inputs": [{"name": "n", "datatype": "INT32", "shape": [1, 1], "data": [1]}]}
    response = http(server).post("/v2/models/countdown/infer", json=request)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [1]


def test_a_stream_of_no_responses_is_an_empty_event_stream(
    server: Serve, http: Callable[[Serve], httpx.Client]
) -> None:
    with http(server).stream("POST", "/v2/models/silent/generate_stream", json={"text_input": "x"}) as response:
        assert response.status_code == 200
        assert events(response) == []


def test_a_generator_that_crashes_ends_the_stream_with_an_error_event(
    server: Serve, http: Callable[[Serve], httpx.Client]
) -> None:
    with http(server).stream("POST", "/v2/models/broken/generate_stream", json={"text_input": "x"}) as response:
        assert response.status_code == 200
        got = events(response)
    assert got[0]["text_output"] == "x"
    assert len(got) == 2 and "the generator broke" in str(got[1]["error"]) and "broken" in str(got[1]["error"])
    # and the model still serves
    with http(server).stream("POST", "/v2/models/broken/generate_stream", json={"text_input": "y"}) as response:
        assert events(response)[0]["text_output"] == "y"


def test_a_bad_generate_request_is_a_400_before_any_event(server: Serve, http: Callable[[Serve], httpx.Client]) -> None:
    client = http(server)
    for body, message in ((b"{not json", "malformed JSON"), (b'{"n": "three"}', "n")):
        response = client.post("/v2/models/countdown/generate_stream", content=body)
        assert response.status_code == 400 and message in response.json()["error"], response.text
    assert client.post("/v2/models/nobody/generate_stream", json={}).status_code == 404


def steps_settle() -> int:
    """The step count once it stops growing (no generator runs): waits at most WAIT_S."""
    seen = [-1]

    def settled() -> bool:
        with STEPS_LOCK:
            now = STEPS["endless"]
        still, seen[0] = now == seen[0], now
        return still

    assert wait_until(settled, WAIT_S, 0.2), "the generator kept running after its client went away"
    return seen[0]


def test_a_client_that_goes_away_stops_the_generator(server: Serve) -> None:
    stream = {"method": "POST", "url": "/v2/models/endless/generate_stream"}
    with (
        httpx.Client(base_url=server.http_url, timeout=WAIT_S) as client,
        client.stream(**stream, json={"text_input": "x"}) as response,
    ):
        lines = response.iter_lines()
        first = [line for line, _ in zip(lines, range(6), strict=False) if line]
        assert len(first) == 3 and all(json.loads(line[6:])["text_output"] == "x" for line in first)
    # the connection is closed: the generator stops, and no step runs any more
    stopped_at = steps_settle()
    time.sleep(0.3)
    assert STEPS["endless"] == stopped_at
    # the model serves the next client
    with (
        httpx.Client(base_url=server.http_url, timeout=WAIT_S) as client,
        client.stream(**stream, json={"text_input": "y"}) as response,
    ):
        assert json.loads(next(line for line in response.iter_lines() if line)[6:])["text_output"] == "y"
    steps_settle()
