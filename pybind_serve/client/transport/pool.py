"""A thread-safe pool of keep-alive HTTP/1.1 connections to one server, on the standard library's
`http.client` (no dependency, and a third of httpx's CPU time per request: see `http_sync`).

Threads borrow a connection for one request and give it back, so a thread per request (Flask's development
server) and a fixed set of threads (gunicorn ``--threads``, `FuturesModelClient`) both reuse a few warm
connections instead of opening one per request or holding one per thread that died.
"""

from __future__ import annotations

import http.client
import select
import socket
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["ConnectionPool", "PoolClosedError", "Reply"]

# A connection the server closed while it sat idle fails this way on the next request, before any answer.
_DROPPED = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class PoolClosedError(ConnectionError):
    """A request on a pool after `ConnectionPool.close`."""


@dataclass(frozen=True)
class Reply:
    """An HTTP response read in full: the body is a bytearray, so arrays decoded over it are writable."""

    status: int
    headers: http.client.HTTPMessage
    body: bytearray


class ConnectionPool:
    """Keep-alive connections to ``host:port``, borrowed one request at a time; `close` closes the idle ones.

    >>> pool = ConnectionPool("127.0.0.1", 8000)
    >>> pool.close()
    """

    def __init__(self, host: str, port: int, max_idle: int = 64, context: ssl.SSLContext | None = None) -> None:
        self.host, self.port, self.max_idle = host, port, max_idle
        self._context = context  # HTTPS: how to check the server
        self._idle: list[http.client.HTTPConnection] = []  # LIFO: the warmest connection first
        self._lock = threading.Lock()
        self._closed = False

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
    ) -> Reply:
        """Send one request and read its response in full; ``timeout_s`` bounds the connect and each read.

        Raises what `http.client` raises (`OSError`, `http.client.HTTPException`, `TimeoutError`), and
        `PoolClosedError`. A connection the server dropped while idle is retried once on a fresh one: the
        server closes only connections with no request in flight, so the request was not run.
        """
        connection, reused = self._borrow(timeout_s)
        try:
            reply = _exchange(connection, method, path, body, headers)
        except _DROPPED:
            connection.close()
            if not reused:
                raise
            connection = self._connect(timeout_s)
            try:
                reply = _exchange(connection, method, path, body, headers)
            except BaseException:
                connection.close()
                raise
        except BaseException:
            connection.close()
            raise
        self._give_back(connection)
        return reply

    def close(self) -> None:
        """Close the idle connections; those borrowed now are closed when given back. Idempotent."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _borrow(self, timeout_s: float | None) -> tuple[http.client.HTTPConnection, bool]:
        while True:
            with self._lock:
                if self._closed:
                    raise PoolClosedError(f"the connection pool to {self.host}:{self.port} is closed")
                connection = self._idle.pop() if self._idle else None
            if connection is None:
                return self._connect(timeout_s), False
            if _still_open(connection):
                connection.timeout = timeout_s
                if connection.sock is not None:
                    connection.sock.settimeout(timeout_s)
                return connection, True
            connection.close()

    def _connect(self, timeout_s: float | None) -> http.client.HTTPConnection:
        if self._context is not None:
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout_s, context=self._context)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout_s)

    def _give_back(self, connection: http.client.HTTPConnection) -> None:
        # After a "Connection: close" answer http.client has closed the socket, and reconnects on the next use.
        with self._lock:
            if not self._closed and len(self._idle) < self.max_idle:
                self._idle.append(connection)
                return
        connection.close()


def _exchange(
    connection: http.client.HTTPConnection,
    method: str,
    path: str,
    body: bytes | None,
    headers: Mapping[str, str] | None,
) -> Reply:
    connection.request(method, path, body, dict(headers or {}))
    response = connection.getresponse()
    length = response.length
    if not length:  # no Content-Length (chunked): read to the end; or nothing to read, which ends the response
        data = bytearray(response.read())
    else:
        data = bytearray(length)
        view, got = memoryview(data), 0
        while got < length:
            n = response.readinto(view[got:])
            if not n:
                raise http.client.IncompleteRead(bytes(data[:got]), length - got)
            got += n
    return Reply(response.status, response.headers, data)


def _still_open(connection: http.client.HTTPConnection) -> bool:
    """Whether an idle connection can carry a request: an idle socket with something to read was closed by
    the server (EOF), or holds bytes nobody asked for; either way it is done."""
    sock: socket.socket | None = connection.sock
    if sock is None:
        return True  # http.client (re)connects on the next request
    # poll, not select (no FD_SETSIZE limit), nor a non-blocking recv (a socket with a timeout waits anyway)
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return not poller.poll(0)
