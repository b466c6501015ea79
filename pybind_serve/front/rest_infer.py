"""The REST infer endpoint (``POST /v2/models/{name}[/versions/{version}]/infer``) as a bare ASGI application.

It is the hot path, so it speaks ASGI directly instead of going through Starlette's routing, middleware and
request objects, which cost about as much CPU per request as all the rest of the front's work on a small
request (profiled under perf_analyzer at concurrency 64). `InferRoute` takes the infer path and hands every
other request to the Starlette application of the other routes. Behaviour is the same as through Starlette:
errors answer ``{"error": "..."}`` with their status, a body over ``max_body_bytes`` is refused before it is
buffered, and a client that disconnects while its request waits has the request cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from typing import Any

from ..errors import (
    InferenceError,
    InternalServerError,
    InvalidInputError,
    PayloadTooLargeError,
    client_message,
)
from ..metrics import Metrics
from ..protocol import rest
from ..protocol.messages import InferRequest
from ..scheduler import Pending
from ..security import Guard, forwarded_headers
from ..spec import ModelSpec
from . import inference
from .access import http_group, http_refusal
from .models import Models
from .regions import Regions
from .trace_spans import Tracer

__all__ = ["InferRoute", "decode_body", "read_body"]

log = logging.getLogger("pybind_serve.front")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

INFER_PATH = re.compile(r"/v2/models/([^/]+)(?:/versions/([^/]+))?/infer")
# Inflating a compressed body takes a thread: at most this many at once, so that a flood of zip bombs costs
# this many cores' time and no more, and the event loop keeps serving everyone else.
_INFLATING = asyncio.Semaphore(2)
_JSON = [(b"content-type", b"application/json")]
_BINARY = b"application/octet-stream"


async def read_body(receive: Receive, headers: dict[bytes, bytes], limit: int) -> bytes:
    """The request body, refused (`PayloadTooLargeError`) as soon as it is known to pass ``limit``;
    `inference.ClientGone` if the client disconnects first."""
    length = headers.get(b"content-length")
    if length is not None:
        if not length.isdigit():
            raise InvalidInputError(f"invalid Content-Length {length.decode(errors='replace')!r}")
        if int(length) > limit:
            raise PayloadTooLargeError(
                f"request body of {int(length)} bytes exceeds the limit of {limit} bytes (max_body_bytes)"
            )
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise inference.ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"request body exceeds the limit of {limit} bytes (max_body_bytes)")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def decode_body(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """`rest.decode_body`, off the event loop when there is something to inflate."""
    if rest.is_identity(content_encoding):
        return rest.decode_body(body, content_encoding, limit)
    async with _INFLATING:
        return await asyncio.to_thread(rest.decode_body, body, content_encoding, limit)


def _header_length(headers: dict[bytes, bytes]) -> int | None:
    value = headers.get(b"inference-header-content-length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidInputError(f"invalid Inference-Header-Content-Length {value.decode(errors='replace')!r}") from None


async def _outcome(receive: Receive, pending: Pending) -> Any:
    """The request's result; cancels its queued work if the client disconnects first (`ClientGone`)."""
    future = pending.future
    watcher = asyncio.ensure_future(receive())
    watcher.add_done_callback(
        lambda w: pending.cancel() if not w.cancelled() and w.result()["type"] == "http.disconnect" else None
    )
    try:
        return await future
    except asyncio.CancelledError:
        if future.cancelled() and not _task_cancelling():
            raise inference.ClientGone from None
        raise
    finally:
        watcher.cancel()


def _task_cancelling() -> bool:
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)  # Python 3.11+
    return cancelling is not None and cancelling() > 0


async def _answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def answer_error(send: Send, exc: Exception) -> None:
    status = exc.http_status if isinstance(exc, InferenceError) else 500
    await _answer(send, status, rest.encode_error(client_message(exc)), _JSON)


def header_reader(scope: Scope) -> Callable[[str], str | None]:
    """Read a request's header by lower-case name (the first, if repeated)."""
    headers: dict[str, str] = {}
    for name, value in scope["headers"]:
        headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    return headers.get


def forwarded_parameters(forward: re.Pattern[str], scope: Scope) -> dict[str, str]:
    """The request's headers that ``forward`` selects, as parameters (`InvalidInputError` for a reserved name)."""
    headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]]
    try:
        return forwarded_headers(forward, headers)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None


class InferRoute:
    """ASGI: the infer path served here, every other request by ``app``."""

    def __init__(
        self,
        app: ASGIApp,
        models: Models,
        metrics: Metrics,
        max_body_bytes: int,
        regions: Regions | None,
        guard: Guard | None = None,
        forward: re.Pattern[str] | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.app = app
        self._models, self._metrics = models, metrics
        self._limit, self._regions = max_body_bytes, regions
        self._guard, self._forward = guard or Guard(()), forward
        self._tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Restricted groups: every path is checked here, once; headers are read only for a restricted group.
        if scope["type"] == "http" and self._guard and self._guard.restricts(group := http_group(scope["path"])):
            key = self._guard.refusal(group or "", header_reader(scope))
            if key is not None:
                await answer_error(send, http_refusal(key))
                return
        if scope["type"] == "http" and (match := INFER_PATH.fullmatch(scope["path"])) is not None:
            if scope["method"] != "POST":
                await _answer(send, 405, rest.encode_error(f"use POST for {scope['path']}"), _JSON)
                return
            try:
                await self._infer(match[1], match[2], scope, receive, send)
            except Exception as exc:  # a bug of ours: answer 500, keep serving
                log.exception("the infer endpoint failed")
                await answer_error(send, InternalServerError(f"internal server error: {exc!r}"))
            return
        await self.app(scope, receive, send)

    async def _infer(self, name: str, version: str | None, scope: Scope, receive: Receive, send: Send) -> None:
        arrived = time.monotonic()
        headers = dict(scope["headers"])
        limit, regions, forward = self._limit, self._regions, self._forward

        async def parse(spec: ModelSpec) -> InferRequest:
            body = await read_body(receive, headers, limit)
            encoding = headers.get(b"content-encoding")
            if encoding is not None:  # (read_body checked the size of a body sent as it is)
                body = await decode_body(body, encoding.decode("latin-1"), limit)
            request = rest.parse_infer_request(body, _header_length(headers), spec, regions)
            if forward is not None:
                request.parameters.update(forwarded_parameters(forward, scope))
            return request

        models, metrics, model = self._models, self._metrics, (name, version)
        encode = rest.encode_infer_response
        traced = None
        if self._tracer is not None and self._tracer.on:
            traced = partial(self._tracer.start, "http", headers.get(b"traceparent"), headers.get(b"tracestate"))
        try:
            if models.find(*model).spec.config.decoupled:
                responses = inference.stream(models, metrics, model, parse, encode, arrived, traced)
                content, header_length = await inference.single(responses, f"model {name!r}")
            else:
                wait = partial(_outcome, receive)
                content, header_length = await inference.infer(
                    models, metrics, model, parse, encode, arrived, wait, traced
                )
        except InferenceError as exc:
            await answer_error(send, exc)
            return
        except inference.ClientGone:
            return  # nobody to answer
        if header_length is None:
            await _answer(send, 200, content, _JSON)
        else:
            binary = [(b"content-type", _BINARY), (b"inference-header-content-length", str(header_length).encode())]
            await _answer(send, 200, content, binary)
