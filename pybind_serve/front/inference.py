"""One inference request's path through the front, the same for HTTP and gRPC: find the model, parse the
request, queue it, await its response, and count it in the metrics.

Each front brings what differs: how it parses its wire format, how it encodes the response (run in the
dispatcher while the outputs are still views into shared memory), and how it notices that a client went away.

`infer` gives one response; `stream` gives each response as it comes: the one of an ordinary model, or the
zero, one or many of a decoupled (streaming) model. Closing the stream early (the client went away) cancels
the request, in the queue or in the worker. A model with a response cache has each parsed request looked up
first (`response_cache`): a hit is answered at once, a miss queued with a ``respond`` that stores its outputs.
A route that traces (`trace_spans.Tracer.on`) passes ``traced``, which gives the request's trace once its model is
known (None when it is not sampled); the trace notes the request's way and ends with it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ..errors import InferenceError, InvalidInputError, ModelExecutionError, UnavailableError
from ..metrics import Metrics
from ..protocol.messages import InferRequest
from ..scheduler import Pending
from ..spec import ModelSpec
from .job import Job
from .models import ModelEntry, Models

if TYPE_CHECKING:
    from .trace_export import RequestTrace

__all__ = ["ClientGone", "failure_reason", "infer", "single", "stream"]

T = TypeVar("T")
Parse = Callable[[ModelSpec], Awaitable[InferRequest]]
Encode = Callable[[ModelSpec, InferRequest, dict[str, np.ndarray]], T]
Traced = Callable[[ModelSpec, float], "RequestTrace | None"]  # `Tracer.start` with the caller's trace context


class ClientGone(Exception):
    """The client went away before its response was ready (its queued request was cancelled)."""


def failure_reason(exc: InferenceError) -> str:
    """The ``reason`` label of ``nv_inference_request_failure`` for an error, as Triton names them."""
    if isinstance(exc, UnavailableError):
        return "REJECTED"
    if isinstance(exc, ModelExecutionError):
        return "BACKEND"
    return "OTHER"


async def _result(pending: Pending[Job]) -> Any:
    return await pending.future


async def infer(
    models: Models,
    metrics: Metrics,
    model: tuple[str, str | int | None],
    parse: Parse,
    encode: Encode[T],
    arrived: float,
    wait: Callable[[Pending[Job]], Awaitable[Any]] = _result,
    traced: Traced | None = None,
) -> T:
    """Serve one request for ``model`` (name, version) that ``arrived`` at that `time.monotonic`.

    Raises the `InferenceError` to answer with, `ClientGone` (raised by ``wait``) or `asyncio.CancelledError`
    (the handler's task was cancelled, which also takes the request out of the queue); each is counted.
    """
    return await _infer(models.ready(*model), metrics, parse, encode, arrived, wait, traced)


async def _infer(
    entry: ModelEntry,
    metrics: Metrics,
    parse: Parse,
    encode: Encode[T],
    arrived: float,
    wait: Callable[[Pending[Job]], Awaitable[Any]] = _result,
    traced: Traced | None = None,
) -> T:
    stats = metrics.model(entry.spec.name, entry.spec.version)
    trace = traced(entry.spec, arrived) if traced is not None else None
    try:
        request = await parse(entry.spec)
        respond: Callable[[dict[str, np.ndarray]], T] = partial(encode, entry.spec, request)
        if trace is not None:
            respond = trace.admitted(request, respond)
        if entry.cache is not None:
            cached, respond = entry.cache.lookup(request, respond, stats)
            if trace is not None:
                trace.cached(cached is not None)
            if cached is not None:  # a hit: answered without running the function
                hit = respond(cached)
                stats.success += 1
                stats.request_us += int((time.monotonic() - arrived) * 1e6)
                if trace is not None:
                    trace.end()
                return hit
        job = Job(request, respond, arrived, trace=trace)
        pending = entry.scheduler.submit(job, request.rows, request.shape_key(), request.priority, request.timeout_us)
        if trace is not None:
            trace.queued(pending.enqueued)
        result: T = await wait(pending)
    except InferenceError as exc:
        stats.fail(failure_reason(exc))
        if trace is not None:
            trace.end(exc)
        raise
    except (ClientGone, asyncio.CancelledError) as exc:
        stats.fail("CANCELED")
        if trace is not None:
            trace.end(exc)
        raise
    except BaseException as exc:  # a bug of ours, answered 500 by the route: the trace ends with it
        if trace is not None:
            trace.end(exc)
        raise
    stats.success += 1
    stats.request_us += int((time.monotonic() - arrived) * 1e6)
    if trace is not None:
        trace.end()
    return result


_END = object()


async def stream(
    models: Models,
    metrics: Metrics,
    model: tuple[str, str | int | None],
    parse: Parse,
    encode: Encode[T],
    arrived: float,
    traced: Traced | None = None,
) -> AsyncGenerator[T, None]:
    """Serve one request, yielding each encoded response as it is ready; counted as `infer` counts.

    Raises the `InferenceError` that ends the stream (responses yielded before it stand).
    """
    entry = models.ready(*model)
    if not entry.spec.config.decoupled:
        yield await _infer(entry, metrics, parse, encode, arrived, traced=traced)
        return
    stats = metrics.model(entry.spec.name, entry.spec.version)
    trace = traced(entry.spec, arrived) if traced is not None else None
    responses: asyncio.Queue[Any] = asyncio.Queue()
    pending = None
    try:
        request = await parse(entry.spec)
        respond: Callable[[dict[str, np.ndarray]], T] = partial(encode, entry.spec, request)
        if trace is not None:
            respond = trace.admitted(request, respond)
        job = Job(request, respond, arrived, emit=responses.put_nowait, trace=trace)
        pending = entry.scheduler.submit(job, request.rows, request.shape_key(), request.priority, request.timeout_us)
        if trace is not None:
            trace.queued(pending.enqueued)
        # Called soon after the last emit, so the end comes after every response.
        pending.future.add_done_callback(lambda _: responses.put_nowait(_END))
        while (response := await responses.get()) is not _END:
            yield response
        pending.future.result()
    except InferenceError as exc:
        stats.fail(failure_reason(exc))
        if trace is not None:
            trace.end(exc)
        raise
    except (GeneratorExit, asyncio.CancelledError) as exc:
        stats.fail("CANCELED")
        if trace is not None:
            trace.end(exc)
        raise
    except BaseException as exc:
        if trace is not None:
            trace.end(exc)
        raise
    finally:
        if pending is not None and not pending.future.done():
            pending.cancel()  # the consumer stopped early: nobody wants the rest
    stats.success += 1
    stats.request_us += int((time.monotonic() - arrived) * 1e6)
    if trace is not None:
        trace.end()


async def single(responses: AsyncIterator[T], label: str) -> T:
    """The one response of a `stream`; a decoupled model that answers none or several is an error here
    (the endpoints that carry exactly one response: REST ``infer`` and ``generate``, gRPC ``ModelInfer``)."""
    found: list[T] = []
    async for response in responses:
        found.append(response)
    if len(found) != 1:
        raise InvalidInputError(
            f"{label} is decoupled and answered this request with {len(found)} responses; this endpoint carries "
            "exactly one: use gRPC ModelStreamInfer or HTTP generate_stream for streaming models"
        )
    return found[0]
