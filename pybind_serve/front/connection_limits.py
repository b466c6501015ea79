"""Limits on what one HTTP connection may cost the front: the size and count of a request's headers, and how
slowly a client may send its request.

uvicorn's httptools protocol sets no limit on headers (a 256 MiB header was accepted, parsed in one piece on the
event loop) and no time limit on receiving a request (a client sending a byte a second holds its connection
forever). `limited_protocol` gives a subclass of it that answers, and then closes the connection:

- **431** when the request line and headers pass ``max_header_bytes`` (checked as the bytes arrive, before the
  parser buffers them) or the request has more than ``max_header_count`` headers;
- **408** when a request's headers take longer than ``read_timeout_s`` to arrive in all, or its body pauses
  for longer than that (a pause the server asked for, while it cannot keep up, does not count).

Error bodies are ``{"error": "..."}``, as every other error of the REST front.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from ..protocol import rest

__all__ = ["ConnectionLimits", "limited_protocol"]

log = logging.getLogger("pybind_serve.front")


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_bytes: int
    max_header_count: int
    read_timeout_s: float


def limited_protocol(limits: ConnectionLimits) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with ``limits`` (pass it as ``uvicorn.Config(http=...)``)."""
    return type("LimitedHttpToolsProtocol", (_LimitedProtocol,), {"limits": limits})


_parent = HttpToolsProtocol  # its methods, called directly: a few hundred ns a request cheaper than super()


class _LimitedProtocol(HttpToolsProtocol):
    """The checks cost a few comparisons per request: the byte count as data arrives, the header count once the
    headers are parsed, and the read timeout as timestamps, checked by at most one timer per connection."""

    limits: ConnectionLimits

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # receiving a request line and headers (or waiting for the next request)
        self._head_bytes = 0
        self._head_started: float | None = None  # when the current request's first byte came
        self._receiving_body = False
        self._refused = False  # answered 431 / 408: the rest of what the client sent is ignored
        self._last_data = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_started = self.loop.time()  # a client that connects and sends nothing is closed in time too
        self._watch_time()

    # -- byte counting -------------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if not self._in_head:
            if self._receiving_body:
                self._last_data = self.loop.time()
            _parent.data_received(self, data)
            return
        if self._refused:
            return
        if self._head_started is None:
            self._head_started = self.loop.time()
            self._watch_time()
        room = self.limits.max_header_bytes - self._head_bytes
        if len(data) <= room:
            self._head_bytes += len(data)
            self._feed(data)
            return
        # Feed only what the limit allows: if the headers do not end within it, they are too large.
        self._head_bytes += room
        self._feed(data[:room])
        if self._in_head and not self._refused:
            self._refuse(431, f"the request line and headers exceed {self.limits.max_header_bytes} bytes")
        elif not self.transport.is_closing():
            self.data_received(data[room:])

    def _feed(self, data: bytes) -> None:
        _parent.data_received(self, data)
        if self._refused or (self._in_head and self._head_started is not None and self._too_many_headers()):
            self._refuse(431, f"the request has more than {self.limits.max_header_count} headers")

    def _too_many_headers(self) -> bool:
        return self.headers is not None and len(self.headers) > self.limits.max_header_count

    # -- parser callbacks ------------------------------------------------------------------------------------

    def on_headers_complete(self) -> None:
        if self._too_many_headers():
            self._refused = True  # answered once the parser returns
            return
        self._in_head = False
        self._receiving_body = True
        self._last_data = self.loop.time()
        _parent.on_headers_complete(self)

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            _parent.on_body(self, body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        _parent.on_message_complete(self)
        self._in_head, self._receiving_body = True, False
        self._head_bytes = 0
        self._head_started = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    # -- the read timeout --------------------------------------------------------------------------------------

    def _watch_time(self, delay_s: float | None = None) -> None:
        """Have `_check_time` run after ``delay_s`` (default: ``read_timeout_s``), unless it is due already."""
        if self._timer is None:
            self._timer = self.loop.call_later(
                self.limits.read_timeout_s if delay_s is None else delay_s, self._check_time
            )

    def _check_time(self) -> None:
        """Refuse a request that is overdue; else look again when it would be. Nothing to watch between requests."""
        self._timer = None
        now, limit = self.loop.time(), self.limits.read_timeout_s
        if self._in_head and self._head_started is not None:
            if now - self._head_started >= limit:
                self._refuse(408, f"the request's headers did not arrive within read_timeout_s={limit:g} s")
            else:
                self._watch_time(self._head_started + limit - now)
        elif self._receiving_body:
            if self.flow.read_paused:  # the server holds the client back: its pause does not count
                self._last_data = now
            if now - self._last_data >= limit:
                self._refuse(408, f"the request's body paused for longer than read_timeout_s={limit:g} s")
            else:
                self._watch_time(self._last_data + limit - now)

    # -- answering -----------------------------------------------------------------------------------------

    def _refuse(self, status: int, message: str) -> None:
        """Answer ``status`` with a JSON error (unless a response has started) and close the connection."""
        self._in_head = self._receiving_body = False
        self._refused = True
        if self.transport.is_closing():
            return
        log.info("refused a request: %s", message)
        if self.cycle is None or self.cycle.response_complete or not self.cycle.response_started:
            body = rest.encode_error(message)
            head = b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body)
            self.transport.write(STATUS_LINE[status] + head + body)
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the handler's receive() says http.disconnect; it answers nobody
            self.cycle.message_event.set()
        self.transport.close()
