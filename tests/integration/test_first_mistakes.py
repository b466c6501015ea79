"""The mistakes of a first hour with the server say what to do, in the log and to the client, on a real server:
a function written for ``@batch`` bound without it, an output returned under another name than declared, a
sample sent without its batch dimension."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from pybind_serve import ModelConfig, Serve, Tensor, batch
from pybind_serve.client import ModelClient
from pybind_serve.errors import InvalidInputError, ModelExecutionError, OutputValidationError

INPUTS = [Tensor("a", np.float32, (-1,)), Tensor("b", np.float32, (-1,))]
OUTPUTS = [Tensor("add", np.float32, (-1,)), Tensor("sub", np.float32, (-1,))]
A, B = np.array([[1, 2]], np.float32), np.array([[3, 4]], np.float32)


def add_sub(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:  # @batch forgotten
    return {"add": a + b, "sub": a - b}


@batch
def misnamed(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    return {"sum": a + b, "sub": a - b}  # declared as "add"


def logged_failure(caplog: pytest.LogCaptureFixture, model: str) -> str:
    errors = [r.getMessage() for r in caplog.records if r.name == "pybind_serve.worker" and r.levelno >= logging.ERROR]
    (message,) = [m for m in errors if f"model {model!r}" in m.split("\n", 1)[0]]
    return message


@pytest.fixture
def serving(make_serve: Callable[..., Serve]) -> Serve:
    serve = make_serve(grpc_port=None, metrics_port=None)
    for name, fn in (("forgot_batch", add_sub), ("misnamed", misnamed)):
        serve.bind(name, fn, inputs=INPUTS, outputs=OUTPUTS, config=ModelConfig(max_batch_size=8))
    return serve.run()


def test_a_forgotten_batch_decorator_logs_its_error_and_what_to_do(
    serving: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pybind_serve.worker")
    with ModelClient(serving.http_url, "forgot_batch") as client, pytest.raises(ModelExecutionError) as raised:
        client.infer_batch(a=A, b=B)
    # The client's message is the function's error, as before.
    expected = "model 'forgot_batch' v1: TypeError: add_sub() missing 1 required positional argument: 'b'"
    assert str(raised.value) == expected
    lines = logged_failure(caplog, "forgot_batch").splitlines()
    assert lines[0].startswith("model 'forgot_batch' v1 failed; further failures in the next 30 s")
    assert lines[1] == "TypeError: add_sub() missing 1 required positional argument: 'b'"  # no frame of ours
    assert lines[2].startswith("Hint: the function is called with one argument, the batch's list of `Request`")
    assert "decorate it with @batch" in lines[2] and len(lines) == 3


def test_a_misnamed_output_names_the_declared_ones(serving: Serve, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pybind_serve.worker")
    with ModelClient(serving.http_url, "misnamed") as client, pytest.raises(ModelExecutionError) as raised:
        client.infer_batch(a=A, b=B)
    message = (
        "output 'add' of model 'misnamed' v1: missing from the function's response, which has ['sub', 'sum']; "
        "the model declares outputs ['add', 'sub'] (bind(outputs=...)), and the function must return each by "
        "that name"
    )
    assert str(raised.value) == message
    lines = logged_failure(caplog, "misnamed").splitlines()
    assert lines[1:] == [f"{OutputValidationError.__module__}.OutputValidationError: {message}"]


def test_a_sample_without_its_batch_dimension_is_told_the_shape_to_send(serving: Serve) -> None:
    body: dict[str, Any] = {"a": A[0], "b": B[0]}
    with ModelClient(serving.http_url, "misnamed") as client, pytest.raises(InvalidInputError) as raised:
        client.infer_batch(**body)  # infer_batch sends the arrays as they are: no batch axis added
    assert str(raised.value) == (
        "input 'a' of model 'misnamed' v1: expected FP32 shape [-1, -1], got FP32 [2] (the first dim is the batch "
        "size: the model batches, up to 8 rows; one sample of shape [2] is sent as [1, 2])"
    )
