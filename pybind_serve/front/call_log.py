"""The gRPC front's access log: one line per call, as uvicorn's access log has one per HTTP request.

``Serve(access_log=True)`` installs `CallLog` on the gRPC server (and nothing when off: no cost per call). Lines
go to the ``pybind_serve.access`` logger at INFO:

    ipv4:127.0.0.1:50312 - "gRPC /inference.GRPCInferenceService/ModelInfer" OK 0.41 ms
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

__all__ = ["CallLog"]

log = logging.getLogger("pybind_serve.access")

_KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")


class CallLog(grpc.aio.ServerInterceptor):
    """Logs every call: the peer, the method, its status and how long it took."""

    def __init__(self) -> None:
        log.setLevel(logging.INFO)  # whatever the server's log_level: asking for an access log is asking for these

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:  # an unknown method: grpc answers UNIMPLEMENTED itself
            return handler
        for kind in _KINDS:
            behaviour = getattr(handler, kind)
            if behaviour is not None:
                return handler._replace(**{kind: _logged(behaviour, details.method)})
        return handler


def _logged(behaviour: Any, method: str) -> Any:
    if inspect.isasyncgenfunction(behaviour):

        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            start, status = time.perf_counter(), None
            try:
                async for answer in behaviour(request, context):
                    yield answer
            except BaseException as exc:
                status = exc
                raise
            finally:
                _write(context, method, start, status)

        return streaming
    if inspect.iscoroutinefunction(behaviour):

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            start, status = time.perf_counter(), None
            try:
                return await behaviour(request, context)
            except BaseException as exc:
                status = exc
                raise
            finally:
                _write(context, method, start, status)

        return unary
    return behaviour  # not one of ours (all are async): left as it is


def _write(context: grpc.aio.ServicerContext, method: str, start: float, raised: BaseException | None) -> None:
    ms = (time.perf_counter() - start) * 1000
    log.info('%s - "gRPC %s" %s %.2f ms', context.peer(), method, _status(context, raised), ms)


def _status(context: grpc.aio.ServicerContext, raised: BaseException | None) -> str:
    """The call's status code: the one the handler set (or aborted with), else OK, or what raising means."""
    try:
        code = context.code()
    except Exception:  # pragma: no cover - grpc.aio has had code() since 1.38
        code = None
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    if isinstance(code, int):
        return next((c.name for c in grpc.StatusCode if c.value[0] == code), str(code))
    if raised is None:
        return "OK"
    return "CANCELLED" if isinstance(raised, (GeneratorExit, asyncio.CancelledError)) else "UNKNOWN"
