"""The front process: ``python -m pybind_serve.front.process '<options JSON>'``, started by `Serve`.

It serves HTTP (and metrics) on listening sockets the owner bound and passed down, and gRPC on a port it
binds itself (grpcio cannot adopt a socket; the port, or why it could not be had, goes back in the answer to
the owner's first ``ping``). It batches requests, and talks to the workers and to the owner over one ZeroMQ
ROUTER. It stops on SIGTERM (draining requests in flight) and at once when its lifeline pipe closes, which
happens when the owner dies, however it dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import uvicorn
import zmq
import zmq.asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import StartupError, UnavailableError
from ..metrics import Metrics
from ..protocol.messages import ModelSpec
from ..transport.frames import decode, encode
from ..transport.shm import Arena, remove_segments_of
from ..version import __version__
from .dispatcher import Dispatcher
from .grpc import GrpcOptions, start_server
from .health import Readiness
from .http import HttpOptions, create_app
from .models import Models
from .regions import Regions

log = logging.getLogger("pybind_serve.front")


@dataclass(frozen=True)
class FrontOptions:
    """What the owner tells the front process on its command line."""

    owner: str
    endpoint: str
    host: str
    http_fd: int
    metrics_fd: int | None
    grpc_port: int | None  # None: no gRPC; 0: any free port
    lifeline_fd: int
    max_body_bytes: int
    grpc_max_message_bytes: int
    drain_timeout_s: float
    log_level: str
    system_shared_memory: bool = False


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the front decides when to stop, for all its servers at once."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Front:
    """The front process's parts, wired together."""

    def __init__(self, options: FrontOptions) -> None:
        self.options = options
        self.stopping = asyncio.Event()
        self.readiness = Readiness(self.is_ready, self.stopping)
        self.models = Models(on_change=self.readiness.changed)
        self.metrics = Metrics(pending=self._pending_counts)
        self.arena = Arena(options.owner, "front")
        self.context = zmq.asyncio.Context()
        self.router = self.context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.bind(options.endpoint)
        self.dispatcher = Dispatcher(self.arena, self.send, self.metrics)
        self.regions = Regions() if options.system_shared_memory else None
        self.opened = False  # set by the owner once the models bound before run() are loaded
        self.owner_gone = False
        self._servers: list[_Server] = []
        self._grpc: grpc.aio.Server | None = None
        self._grpc_bound: dict[str, Any] = {}  # the port gRPC listens on, or why it could not bind
        self._control: dict[str, Callable[[dict[str, Any]], Any]] = {
            "ping": self._ping,
            "load": self._load,
            "unload": self._unload,
            "wait_ready": self._wait_ready,
            "worker_gone": self._worker_gone,
            "status": self._status,
            "open": self._open,
        }

    def is_serving(self) -> bool:
        return self.opened and not self.stopping.is_set()

    def is_ready(self) -> bool:
        """What ``/v2/health/ready`` says: serving, and every model has a worker."""
        return self.is_serving() and self.models.all_ready()

    def _pending_counts(self) -> dict[tuple[str, int], int]:
        return {(e.spec.name, e.spec.version): e.scheduler.pending_count for e in self.models.entries()}

    def send(self, identity: bytes, frame: dict[str, Any]) -> None:
        # ROUTER sends never block (an unroutable frame is dropped), so the future needs no awaiting.
        self.router.send_multipart([identity, encode(frame)])

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_reader(self.options.lifeline_fd, self._owner_died)
        await self._start_grpc()  # before the first ping is answered: its answer reports the port
        tasks = [loop.create_task(self._receive())]
        tasks += [loop.create_task(server.serve(sockets=[sock])) for server, sock in self._build_servers()]
        await self.stopping.wait()
        self.readiness.changed()
        await self._shutdown(tasks)

    async def _start_grpc(self) -> None:
        if self.options.grpc_port is None:
            return
        options = GrpcOptions(
            self.options.host, self.options.grpc_port, self.options.grpc_max_message_bytes, __version__
        )
        try:
            self._grpc, port = await start_server(
                self.models, self.metrics, self.readiness, self.is_serving, options, self.regions
            )
        except StartupError as exc:  # the owner raises it from run(), and stops us
            self._grpc_bound = {"grpc_error": {"type": type(exc).__name__, "message": str(exc)}}
        else:
            self._grpc_bound = {"grpc_port": port}

    def _owner_died(self) -> None:
        asyncio.get_running_loop().remove_reader(self.options.lifeline_fd)
        log.warning("the process that started this server died; stopping")
        self.owner_gone = True
        self.stopping.set()

    def _build_servers(self) -> list[tuple[_Server, socket.socket]]:
        options = HttpOptions(self.options.max_body_bytes, __version__)
        app = create_app(self.models, self.metrics, options, self.is_serving, self.regions)
        pairs: list[tuple[Any, int]] = [(app, self.options.http_fd)]
        if self.options.metrics_fd is not None:
            pairs.append((self._metrics_app(), self.options.metrics_fd))
        for app_, _fd in pairs:
            config = uvicorn.Config(
                app_,
                log_level=self.options.log_level,
                access_log=False,
                lifespan="off",
                http="httptools",
                proxy_headers=False,  # nothing reads the client address: skip the middleware on every request
                timeout_graceful_shutdown=max(int(self.options.drain_timeout_s), 1),
            )
            self._servers.append(_Server(config))
        return [(server, socket.socket(fileno=fd)) for server, (_, fd) in zip(self._servers, pairs, strict=True)]

    def _metrics_app(self) -> Starlette:
        async def metrics(_: Request) -> Response:
            return Response(self.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

        return Starlette(routes=[Route("/metrics", metrics)])

    async def _receive(self) -> None:
        while True:
            identity, data = await self.router.recv_multipart()
            try:
                self._route(identity, decode(data))
            except Exception:
                log.exception("could not handle a frame from %r", identity)

    def _route(self, identity: bytes, frame: dict[str, Any]) -> None:
        op = frame.get("op")
        if op in ("result", "error", "partial", "done"):
            self.dispatcher.answer(frame)
        elif op == "hello":
            self._hello(identity, frame)
        elif op in self._control:
            asyncio.get_running_loop().create_task(self._answer(identity, frame))
        else:
            log.error("unknown frame op %r from %r", op, identity)

    def _hello(self, identity: bytes, frame: dict[str, Any]) -> None:
        try:
            entry = self.models.find(frame["model"], frame["version"])
        except Exception:
            log.warning(
                "worker %r serves model %r v%s, which is not loaded", identity, frame["model"], frame["version"]
            )
            return
        self.dispatcher.register(identity, entry, frame["segments"])

    async def _answer(self, identity: bytes, frame: dict[str, Any]) -> None:
        try:
            result = await self._control[frame["op"]](frame)
            reply = {"call": frame.get("call"), "ok": True, **(result or {})}
        except Exception as exc:
            reply = {"call": frame.get("call"), "ok": False, "error": f"{type(exc).__name__}: {exc}"}
        self.send(identity, reply)

    async def _ping(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"pid": os.getpid(), **self._grpc_bound}

    async def _load(self, frame: dict[str, Any]) -> None:
        self.models.load(ModelSpec.from_wire(frame["spec"]))

    async def _unload(self, frame: dict[str, Any]) -> None:
        entry = self.models.unload(frame["name"], frame["version"])
        if entry is not None:
            await self.dispatcher.retire(entry, self.options.drain_timeout_s)

    async def _wait_ready(self, frame: dict[str, Any]) -> None:
        entry = self.models.find(frame["name"], frame["version"])
        await asyncio.wait_for(entry.ready.wait(), frame["wait_s"])

    async def _status(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"ready": self.is_ready()}

    async def _open(self, _: dict[str, Any]) -> None:
        self.opened = True
        self.readiness.changed()

    async def _worker_gone(self, frame: dict[str, Any]) -> None:
        self.dispatcher.remove(frame["identity"].encode(), frame["why"])

    async def _shutdown(self, tasks: list[asyncio.Task[Any]]) -> None:
        for server in self._servers:
            server.should_exit = True
            server.force_exit = self.owner_gone  # nobody is left to answer requests in flight
        if self.owner_gone:
            self.models.close(UnavailableError("the server is stopping"))
        grace = None if self.owner_gone else self.options.drain_timeout_s
        stopped = [self._grpc.stop(grace)] if self._grpc is not None else []
        await asyncio.gather(*tasks[1:], *stopped, return_exceptions=True)
        self.models.close(UnavailableError("the server is stopping"))
        self.dispatcher.close()
        tasks[0].cancel()
        await asyncio.gather(tasks[0], return_exceptions=True)
        self.router.close(linger=0)
        self.context.term()
        self.arena.close()
        if self.regions is not None:
            self.regions.close()
        if self.owner_gone:
            remove_segments_of(self.options.owner)


def _configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[pybind_serve front] %(levelname)s %(message)s"))
    logger = logging.getLogger("pybind_serve")
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False


def main(argv: list[str]) -> None:
    options = FrontOptions(**json.loads(argv[1]))
    _configure_logging(options.log_level)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the owner, which stops us in order
    try:
        import uvloop

        run: Callable[[Any], Any] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        run = asyncio.run

    async def start() -> None:
        await Front(options).run()

    run(start())


if __name__ == "__main__":
    main(sys.argv)
