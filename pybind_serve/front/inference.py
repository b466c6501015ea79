"""One inference request's path through the front, the same for HTTP and gRPC: find the model, parse the
request, queue it, await its response, and count it in the metrics.

Each front brings what differs: how it parses its wire format, how it encodes the response (run in the
dispatcher while the outputs are still views into shared memory), and how it notices that a client went away.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import numpy as np

from ..errors import InferenceError, ModelExecutionError, UnavailableError
from ..metrics import Metrics
from ..protocol.messages import InferRequest, ModelSpec
from ..scheduler import Pending
from .dispatcher import Job
from .models import Models

__all__ = ["ClientGone", "failure_reason", "infer"]

T = TypeVar("T")
Parse = Callable[[ModelSpec], Awaitable[InferRequest]]
Encode = Callable[[ModelSpec, InferRequest, dict[str, np.ndarray]], T]


class ClientGone(Exception):
    """The client went away before its response was ready (its queued request was cancelled)."""


def failure_reason(exc: InferenceError) -> str:
    """The ``reason`` label of ``nv_inference_request_failure`` for an error, as Triton names them."""
    if isinstance(exc, UnavailableError):
        return "REJECTED"
    if isinstance(exc, ModelExecutionError):
        return "BACKEND"
    return "OTHER"


async def _result(pending: Pending) -> Any:
    return await pending.future


async def infer(
    models: Models,
    metrics: Metrics,
    model: tuple[str, str | int | None],
    parse: Parse,
    encode: Encode[T],
    arrived: float,
    wait: Callable[[Pending], Awaitable[Any]] = _result,
) -> T:
    """Serve one request for ``model`` (name, version) that ``arrived`` at that `time.monotonic`.

    Raises the `InferenceError` to answer with, `ClientGone` (raised by ``wait``) or `asyncio.CancelledError`
    (the handler's task was cancelled, which also takes the request out of the queue); each is counted.
    """
    entry = models.ready(*model)
    stats = metrics.model(entry.spec.name, entry.spec.version)
    try:
        request = await parse(entry.spec)
        job = Job(request, partial(encode, entry.spec, request), arrived)
        pending = entry.scheduler.submit(job, request.rows, request.shape_key(), request.priority, request.timeout_us)
        result: T = await wait(pending)
    except InferenceError as exc:
        stats.fail(failure_reason(exc))
        raise
    except (ClientGone, asyncio.CancelledError):
        stats.fail("CANCELED")
        raise
    stats.success += 1
    stats.request_us += int((time.monotonic() - arrived) * 1e6)
    return result
