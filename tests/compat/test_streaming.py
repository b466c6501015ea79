"""The real `tritonclient.grpc` streams from a decoupled model (the streaming example) as it does from Triton:
`start_stream` / `async_stream_infer` with `triton_final_response` flags, the aio client's `stream_infer`,
and `perf_analyzer -i grpc --async --streaming`."""

from __future__ import annotations

import asyncio
import queue
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

from pybind_serve import ModelConfig, Serve, Tensor, sample
from tests.conftest import module_server, wait_until

from .conftest import load_example
from .test_perf_analyzer import ERROR_LINE, THROUGHPUT, TIMEOUT_S

WAIT_S = 30
STEPS = {"endless": 0}
STEPS_LOCK = threading.Lock()


@sample
def endless(text_input: np.ndarray) -> Iterator[dict[str, np.ndarray]]:
    """Streams the prompt back every 10 ms until the client goes away."""
    while True:
        with STEPS_LOCK:
            STEPS["endless"] += 1
        time.sleep(0.01)
        yield {"text_output": text_input}


def bind(serve: Serve) -> None:
    load_example("streaming").bind(serve, delay_ms=5)
    serve.bind(
        "endless",
        endless,
        [Tensor("text_input", bytes, (1,))],
        [Tensor("text_output", bytes, (1,))],
        config=ModelConfig(max_batch_size=8, decoupled=True),
    )


def warm_up(serve: Serve) -> None:
    assert serve.grpc_url is not None
    with grpcclient.InferenceServerClient(serve.grpc_url) as client:
        answers = start(client)
        client.async_stream_infer("reverse_words", [prompt("warm")], enable_empty_final_response=True)
        assert final(answers.get(timeout=WAIT_S)) is False
        assert final(answers.get(timeout=WAIT_S)) is True
        client.async_stream_infer("endless", [prompt("warm")])
        assert final(answers.get(timeout=WAIT_S)) is False
        client.stop_stream(cancel_requests=True)


@pytest.fixture(scope="module")
def grpc_url() -> Iterator[str]:
    with module_server(bind, warm_up) as server:
        assert server.grpc_url is not None
        yield server.grpc_url


def prompt(text: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("text_input", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[text.encode()]], dtype=object))
    return tensor


def start(client: grpcclient.InferenceServerClient) -> queue.Queue[Any]:
    answers: queue.Queue[Any] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put(error or result))
    return answers


def final(result: Any) -> bool:
    assert not isinstance(result, Exception), result
    return bool(result.get_response().parameters["triton_final_response"].bool_param)


def word(result: Any) -> str:
    return str(result.as_numpy("text_output").item().decode())


def test_stream_infer_answers_word_by_word_then_an_empty_final(grpc_url: str) -> None:
    with grpcclient.InferenceServerClient(grpc_url) as client:
        answers = start(client)
        client.async_stream_infer("reverse_words", [prompt("a b c")], request_id="r1", enable_empty_final_response=True)
        results = [answers.get(timeout=WAIT_S) for _ in range(4)]
        client.stop_stream()
    assert [final(r) for r in results] == [False, False, False, True]
    assert [word(r) for r in results[:3]] == ["c", "b", "a"]
    assert {r.get_response().id for r in results} == {"r1"}
    assert results[3].get_response().outputs == []  # the empty final response carries no output


def test_without_empty_final_only_the_words_come(grpc_url: str) -> None:
    with grpcclient.InferenceServerClient(grpc_url) as client:
        answers = start(client)
        client.async_stream_infer("reverse_words", [prompt("x y")])
        got = [word(answers.get(timeout=WAIT_S)) for _ in range(2)]
        time.sleep(0.2)
        assert answers.empty()
        client.stop_stream()
    assert got == ["y", "x"]


def test_requests_on_one_stream_interleave_and_end_independently(grpc_url: str) -> None:
    texts = {f"r{i}": " ".join(f"w{i}_{k}" for k in range(i)) for i in range(1, 7)}
    with grpcclient.InferenceServerClient(grpc_url) as client:
        answers = start(client)
        for request_id, text in texts.items():
            client.async_stream_infer("reverse_words", [prompt(text)], request_id=request_id,
                                      enable_empty_final_response=True)  # fmt: skip
        streams: dict[str, list[str]] = {request_id: [] for request_id in texts}
        finals = 0
        while finals < len(texts):
            result = answers.get(timeout=WAIT_S)
            if final(result):
                finals += 1
            else:
                streams[result.get_response().id].append(word(result))
        client.stop_stream()
    assert streams == {request_id: text.split()[::-1] for request_id, text in texts.items()}


def test_an_error_reaches_the_stream_and_the_stream_goes_on(grpc_url: str) -> None:
    with grpcclient.InferenceServerClient(grpc_url) as client:
        answers = start(client)
        client.async_stream_infer("nobody", [prompt("x")])
        error = answers.get(timeout=WAIT_S)
        assert isinstance(error, InferenceServerException) and "nobody" in error.message()
        client.async_stream_infer("reverse_words", [prompt("still here")])
        assert [word(answers.get(timeout=WAIT_S)) for _ in range(2)] == ["here", "still"]
        client.stop_stream()


def test_the_aio_client_streams(grpc_url: str) -> None:
    """The aio client half-closes its side after the last request: the server answers everything, then ends
    the call. (It cannot ask for empty final responses: it calls that parameter reserved.)"""

    async def requests() -> AsyncIterator[dict[str, Any]]:
        for request_id, text in (("a", "one two"), ("b", "three")):
            yield {"model_name": "reverse_words", "inputs": [prompt(text)], "request_id": request_id}

    async def stream() -> list[tuple[str, str]]:
        got: list[tuple[str, str]] = []
        async with aioclient.InferenceServerClient(grpc_url) as client:
            async for result, error in client.stream_infer(requests()):
                assert error is None, error
                got.append((result.get_response().id, word(result)))
        return got

    got = asyncio.run(asyncio.wait_for(stream(), WAIT_S))
    assert [text for request_id, text in got if request_id == "a"] == ["two", "one"]
    assert [text for request_id, text in got if request_id == "b"] == ["three"]


def test_stopping_the_stream_stops_the_generator(grpc_url: str) -> None:
    with grpcclient.InferenceServerClient(grpc_url) as client:
        answers = start(client)
        client.async_stream_infer("endless", [prompt("x")])
        assert [word(answers.get(timeout=WAIT_S)) for _ in range(3)] == ["x"] * 3
        client.stop_stream(cancel_requests=True)  # without it, the client would wait for the stream's end
    seen = [-1]

    def settled() -> bool:
        with STEPS_LOCK:
            now = STEPS["endless"]
        still, seen[0] = now == seen[0], now
        return still

    assert wait_until(settled, WAIT_S, 0.2), "the generator kept running after the stream was closed"


@pytest.mark.perf_analyzer
def test_perf_analyzer_streams_from_a_decoupled_model(perf_analyzer: str, grpc_url: str) -> None:
    command = [
        perf_analyzer,
        *("-m", "reverse_words", "-i", "grpc", "-u", grpc_url, "--async", "--streaming"),
        *("--shape", "text_input:1", "--string-data", "one two three"),
        *("--concurrency-range", "4", "--measurement-interval", "1000"),
        # these runs check correctness, not speed: a loose stability bound (up to 10 windows) so that a noisy
        # machine cannot fail them with "Failed to obtain stable measurement"
        *("--max-trials", "10", "--stability-percentage", "500"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"perf_analyzer exited {done.returncode}:\n{output}"
    assert not [line for line in output.splitlines() if ERROR_LINE.search(line)], output
    throughput = THROUGHPUT.search(output)
    assert throughput and float(throughput.group(1)) > 0, output
