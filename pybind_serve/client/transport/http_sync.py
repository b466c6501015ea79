"""The blocking HTTP transport: a pool of keep-alive `http.client` connections (`pool`).

Why not httpx (one API for sync and async): on loopback, against our server, a small infer request costs the
calling thread 0.33 ms of CPU through this pool, 0.94 ms through ``httpx.Client``; where calls share a GIL
with the model (a Flask handler calling `BatchedModel`, a notebook), that CPU is throughput.
"""

from __future__ import annotations

import http.client

from ...errors import InferenceTimeoutError, ServerUnreachableError, UnavailableError
from ..exchange import HttpReply, HttpRequest, Request
from ..url import Endpoint
from .pool import ConnectionPool, PoolClosedError

__all__ = ["HttpTransport", "unreachable"]

# Raised once a connection was made: it broke (the server went away) before the whole answer came.
_BROKE = (ConnectionResetError, BrokenPipeError, http.client.HTTPException)


class HttpTransport:
    """Requests to one HTTP server, from any number of threads."""

    def __init__(self, endpoint: Endpoint, max_idle: int = 64) -> None:
        self._where = endpoint.address
        context = endpoint.tls.ssl_context() if endpoint.tls is not None else None
        self._pool = ConnectionPool(endpoint.host, endpoint.port, max_idle, context)

    def send(self, request: Request) -> HttpReply:
        if not isinstance(request, HttpRequest):
            raise TypeError(f"an HTTP transport sends HttpRequest, got {type(request).__name__}")
        try:
            reply = self._pool.request(
                request.method, request.path, request.body or None, request.headers, request.timeout_s
            )
        except PoolClosedError:
            raise UnavailableError(f"{request.what}: this client was closed") from None
        except TimeoutError:
            raise InferenceTimeoutError(
                f"{request.what}: no answer from {self._where} within timeout_s={request.timeout_s:g}"
            ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise unreachable(request.what, self._where, exc, broke=isinstance(exc, _BROKE)) from None
        return HttpReply(reply.status, reply.headers, reply.body)

    def close(self) -> None:
        self._pool.close()


def unreachable(what: str, where: str, exc: BaseException, *, broke: bool) -> ServerUnreachableError:
    """The error for a connection that could not be made, or that ``broke`` before the answer came."""
    cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if broke:
        return ServerUnreachableError(
            f"{what}: the connection to the server at {where} broke before the answer came ({cause})"
        )
    return ServerUnreachableError(f"{what}: cannot reach the server at {where} ({cause}); is it running?")
