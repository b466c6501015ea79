"""`FailureLog`: a model's failures are logged without flooding, with the user's frames only."""

from __future__ import annotations

import logging
import traceback
from typing import Any

import numpy as np
import pytest

from pybind_serve.decorators import batch
from pybind_serve.errors import InvalidInputError, OutputValidationError
from pybind_serve.request import Request
from pybind_serve.tensor import Tensor
from pybind_serve.worker import FailureLog, _conform_dtype, _mistake_hint, user_traceback


def failure(exc: Exception) -> Exception:
    """``exc`` raised from this (user) file, so that it carries a traceback."""
    try:
        raise exc
    except Exception as raised:
        return raised


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_burst_is_logged_once_then_summed_up_after_the_interval(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="pybind_serve.worker")
    log = FailureLog("model 'm' v1", interval_s=10)
    for now in (100.0, 101.0, 105.0, 109.9):
        log.record(failure(ValueError("bad")), now)
    assert len(errors(caplog)) == 1 and "model 'm' v1 failed; further failures" in errors(caplog)[0]
    assert sum("failed: ValueError: bad" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG) == 3
    log.record(failure(ValueError("bad")), 110.0)
    assert len(errors(caplog)) == 2 and "(3 more failures since the last report)" in errors(caplog)[1]


def test_failures_the_client_caused_are_debug_only(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="pybind_serve.worker")
    FailureLog("model 'm' v1").record(failure(InvalidInputError("x must be positive")), 0.0)
    assert errors(caplog) == []
    assert "model 'm' v1 refused a request: x must be positive" in caplog.text


def test_the_traceback_shows_the_users_frames_only() -> None:
    @batch
    def users_model(x: np.ndarray) -> dict[str, np.ndarray]:
        raise ZeroDivisionError("weights")

    with pytest.raises(ZeroDivisionError) as raised:
        users_model([Request({"x": np.ones((1, 1))})])  # through @batch: frames of decorators.py in between
    text = user_traceback(raised.value)
    assert "in users_model" in text and text.endswith("ZeroDivisionError: weights")
    ours = "pybind_serve/decorators.py"
    assert ours not in text and ours in "".join(traceback.format_tb(raised.value.__traceback__))


def test_an_error_of_ours_alone_is_its_message() -> None:
    """A check of ours that failed (here: an output of the wrong dtype) says all in its message: no frames."""
    with pytest.raises(OutputValidationError) as raised:
        _conform_dtype("output 'y'", Tensor("y", np.float32, (1,)), np.array(["a"]), False)
    error = raised.value
    assert error.__traceback__ is not None
    error.__traceback__ = error.__traceback__.tb_next  # drop this test's frame: only worker.py's are left
    assert user_traceback(error) == "pybind_serve.errors.OutputValidationError: output 'y': expected FP32, got <U1"


def test_a_chained_exception_loses_our_frames_too() -> None:
    @batch
    def users_model(x: np.ndarray) -> dict[str, np.ndarray]:
        try:
            _conform_dtype("output 'y'", Tensor("y", np.float32, (1,)), np.array(["a"]), False)
        except OutputValidationError as exc:
            raise ValueError("could not convert") from exc
        return {}

    with pytest.raises(ValueError) as raised:
        users_model([Request({"x": np.ones((1, 1))})])
    text = user_traceback(raised.value)
    assert "expected FP32, got <U1" in text and text.endswith("ValueError: could not convert")
    assert "in users_model" in text and "pybind_serve/" not in text


def test_the_whole_traceback_is_logged_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="pybind_serve.worker")
    FailureLog("model 'm' v1").record(failure(ValueError("bad")), 0.0, "Hint: do this.")
    (error,) = errors(caplog)
    assert error.endswith("ValueError: bad\nHint: do this.")
    (debug,) = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert debug.exc_info is not None and debug.getMessage() == "model 'm' v1 failed; the whole traceback:"


# -- hints for the common mistakes -------------------------------------------------------------------------


def call_failure(fn: Any, *args: Any) -> BaseException:
    """What calling ``fn`` raised, with this test's frame left out when the call itself failed (as the worker's
    own frame calls the function, and nothing of the user's code ran)."""
    try:
        fn(*args)
    except Exception as exc:
        assert exc.__traceback__ is not None
        if exc.__traceback__.tb_next is None:
            exc.__traceback__ = None
        return exc
    raise AssertionError(f"{fn} raised nothing")


def test_a_function_written_for_batch_but_bound_without_it_is_told_to_use_batch() -> None:
    def add_sub(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
        return {"add": a + b}

    hint = _mistake_hint(add_sub, call_failure(add_sub, [Request({})]))
    assert hint.startswith("Hint: the function is called with one argument, the batch's list of `Request`")
    assert "decorate it with @batch" in hint
    assert _mistake_hint(batch(add_sub), call_failure(add_sub, [Request({})])) == ""


def test_a_function_that_took_the_list_for_an_array_is_told_too() -> None:
    def scale(x: Any) -> dict[str, Any]:
        return {"y": x.shape}

    hint = _mistake_hint(scale, call_failure(scale, [Request({})]))
    assert hint.startswith("Hint: if the function expected arrays, it got a list: the function is called with")

    class Model:
        @batch
        def __call__(self, x: Any) -> dict[str, Any]:
            return {"y": x.shape}

    assert _mistake_hint(Model(), call_failure(scale, [Request({})])) == ""  # decorated: it does get arrays


@pytest.mark.parametrize("raised", [TypeError("bad weights"), ValueError("list of weights"), KeyError("x")])
def test_other_failures_get_no_hint(raised: Exception) -> None:
    def model(requests: list[Request]) -> list[dict[str, Any]]:
        raise raised

    assert _mistake_hint(model, call_failure(model, [Request({})])) == ""
