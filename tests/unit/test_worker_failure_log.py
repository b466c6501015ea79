"""`FailureLog`: a model's failures are logged without flooding, with the user's frames only."""

from __future__ import annotations

import logging
import traceback

import numpy as np
import pytest

from pybind_serve.decorators import batch
from pybind_serve.errors import InvalidInputError, OutputValidationError
from pybind_serve.request import Request
from pybind_serve.tensor import Tensor
from pybind_serve.worker import FailureLog, _conform_dtype, user_traceback


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


def test_an_error_of_ours_alone_keeps_its_frames() -> None:
    with pytest.raises(OutputValidationError) as raised:
        _conform_dtype("output 'y'", Tensor("y", np.float32, (1,)), np.array(["a"]), False)
    error = raised.value
    assert error.__traceback__ is not None
    error.__traceback__ = error.__traceback__.tb_next  # drop this test's frame: only worker.py's are left
    text = user_traceback(error)
    assert "worker.py" in text and "expected FP32" in text
