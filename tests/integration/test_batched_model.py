"""`BatchedModel` against a real server: outputs, input casting, batching across threads, and every failure
raised as the `pybind_serve.errors` class a handler can catch."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from pybind_serve import InvalidInputError, ModelConfig, ModelExecutionError, Request, Serve, Tensor, batch
from pybind_serve.errors import InferenceTimeoutError, ModelNotFoundError, UnavailableError
from pybind_serve.integrations.flask import BatchedModel

X, Y = Tensor("x", np.float32, (2,)), Tensor("y", np.float32, (2,))


@batch
def double(x: np.ndarray) -> dict[str, np.ndarray]:
    return {"y": x * 2}


def running(make_serve: Callable[..., Serve], fn: Callable[..., Any], **config: Any) -> Serve:
    serve = make_serve(metrics_port=None)
    serve.bind("m", fn, inputs=[X], outputs=[Y], config=ModelConfig(**config))
    return serve.run()


def test_a_call_returns_the_outputs_as_writable_arrays(make_serve: Callable[..., Serve]) -> None:
    serve = running(make_serve, double)
    with BatchedModel(serve, "m") as model:
        y = model(x=[[1, 2], [3, 4.5]])["y"]  # a JSON-style list, cast to the declared FP32
        assert y.dtype == np.float32 and y.tolist() == [[2, 4], [6, 9]]
        y += 1  # the caller owns its answer
        assert model(x=np.ones((1, 2)))["y"].tolist() == [[2, 2]]  # float64 in, cast to FP32


def test_calls_from_many_threads_share_batches(make_serve: Callable[..., Serve]) -> None:
    sizes: list[int] = []

    @batch
    def slow_double(x: np.ndarray) -> dict[str, np.ndarray]:
        sizes.append(len(x))
        time.sleep(0.005)
        return {"y": x * 2}

    serve = running(make_serve, slow_double, max_batch_size=32)
    with BatchedModel(serve, "m") as model, ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: model(x=np.full((1, 2), i, np.float32))["y"], range(64)))
    assert [r.tolist() for r in results] == [[[2 * i, 2 * i]] for i in range(64)]
    assert max(sizes) > 1 and sum(sizes) == 64


def test_parameters_and_bytes_reach_the_function(make_serve: Callable[..., Serve]) -> None:
    def greet(requests: list[Request]) -> list[dict[str, Any]]:
        return [
            {"text": np.array([[b"%s, " % r.parameters["greeting"].encode() + n] for n in r["name"][:, 0]])}
            for r in requests
        ]

    serve = make_serve(metrics_port=None)
    serve.bind("greet", greet, inputs=[Tensor("name", bytes, (1,))], outputs=[Tensor("text", bytes, (1,))])
    serve.run()
    with BatchedModel(serve, "greet") as model:
        out = model.infer({"name": [["wörld"]]}, parameters={"greeting": "hello"})["text"]
    assert out.tolist() == [["hello, wörld".encode()]]


def test_a_failing_function_raises_model_execution_error_and_logs_once(
    make_serve: Callable[..., Serve], caplog: pytest.LogCaptureFixture
) -> None:
    @batch
    def broken(x: np.ndarray) -> dict[str, np.ndarray]:
        raise ZeroDivisionError("weights are all zero")

    serve = running(make_serve, broken)
    caplog.set_level(logging.DEBUG, logger="pybind_serve.worker")
    with BatchedModel(serve, "m") as model, ThreadPoolExecutor(8) as pool:
        errors = list(pool.map(lambda _: _raised(model, np.ones((1, 2))), range(16)))
    assert all(isinstance(e, ModelExecutionError) for e in errors), errors
    assert "model 'm' v1: ZeroDivisionError: weights are all zero" in str(errors[0])
    logged = [r for r in caplog.records if r.name == "pybind_serve.worker" and r.levelno >= logging.ERROR]
    assert len(logged) == 1, [r.getMessage() for r in logged]  # not one traceback per failing batch
    message = logged[0].getMessage()
    assert 'raise ZeroDivisionError("weights are all zero")' in message and "pybind_serve/worker.py" not in message


def test_client_mistakes_raise_invalid_input_error_without_an_error_log(
    make_serve: Callable[..., Serve], caplog: pytest.LogCaptureFixture
) -> None:
    @batch
    def picky(x: np.ndarray) -> dict[str, np.ndarray]:
        if (x < 0).any():
            raise InvalidInputError("x must not be negative")
        return {"y": x}

    serve = running(make_serve, picky)
    with BatchedModel(serve, "m") as model:
        with pytest.raises(InvalidInputError, match=r"input 'x' of model 'm' v1.*shape"):
            model(x=np.ones((1, 3)))  # checked by the server against the declared shape
        with pytest.raises(InvalidInputError, match="x must not be negative"):
            model(x=-np.ones((1, 2)))  # raised by the function
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_unknown_model_stopped_server_and_timeout_raise_their_errors(make_serve: Callable[..., Serve]) -> None:
    release = threading.Event()

    @batch
    def stuck(x: np.ndarray) -> dict[str, np.ndarray]:
        release.wait(5)
        return {"y": x}

    serve = running(make_serve, stuck)
    with BatchedModel(serve, "nope") as model, pytest.raises(ModelNotFoundError, match="nope"):
        model(x=np.ones((1, 2)))
    with BatchedModel(serve, "m", timeout_s=0.3) as model:
        try:
            with pytest.raises(InferenceTimeoutError, match=r"model 'm'.*timeout_s=0.3"):
                model(x=np.ones((1, 2)))
        finally:
            release.set()
        serve.stop()
        with pytest.raises(UnavailableError, match="cannot reach the server"):
            model(x=np.ones((1, 2)))


def test_rebinding_the_model_is_seen_by_the_next_call(make_serve: Callable[..., Serve]) -> None:
    serve = running(make_serve, double)
    with BatchedModel(serve, "m") as model:
        assert model(x=[[1, 1]])["y"].tolist() == [[2, 2]]
        serve.bind("m", batch(lambda x: {"y": x * 3}), inputs=[X], outputs=[Y])
        assert model(x=[[1, 1]])["y"].tolist() == [[3, 3]]


def _raised(model: BatchedModel, x: np.ndarray) -> BaseException | None:
    try:
        model(x=x)
    except Exception as exc:
        return exc
    return None
