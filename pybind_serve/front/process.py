"""The front process: ``python -m pybind_serve.front.process '<options JSON>'``, started by `Serve`.

It serves HTTP (and metrics) on listening sockets the owner bound and passed down, and gRPC on a port it
binds itself (grpcio cannot adopt a socket; the port, or why it could not be had, goes back in the answer to
the owner's first ``ping``). It batches requests, and talks to the workers and to the owner over one ZeroMQ
ROUTER.

It stops on SIGTERM: new connections are refused, requests in flight are served for up to ``drain_timeout_s``,
and those still open then are answered 503 (gRPC UNAVAILABLE) before it exits. It stops at once when its
lifeline pipe closes, which happens when the owner dies, however it dies; a thread watches the lifeline, so
that even a front whose event loop is stuck exits (cleaning up after its server) a few seconds later.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import grpc
import uvicorn
import zmq
import zmq.asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import InferenceError, ModelNotFoundError, StartupError, UnavailableError
from ..linux import trim_heap
from ..logs import python_level
from ..metrics import Metrics
from ..protocol.shared_memory import RegionSpec
from ..security import Restriction, Tls
from ..spec import ModelSpec
from ..system_metrics import SystemMetrics
from ..transport.channel import endpoint_path
from ..transport.frames import decode, encode
from ..transport.network import SECRET_ENV
from ..transport.shm import Arena, front_tag, remove_segments_of
from ..version import __version__
from .connection_limits import ConnectionLimits, limited_protocol
from .dispatcher import Dispatcher
from .grpc_service import GrpcOptions, start_server
from .health import Readiness
from .log_settings import LogSettings
from .models import Models
from .network import NetworkPort
from .peers import Peers
from .regions import Regions, enabled
from .remotes import Remote, Remotes
from .response_cache import ResponseCache
from .rest_app import HttpOptions, create_app
from .runtime_settings import RuntimeSettings
from .trace_spans import Tracer
from .vertex_route import VertexRoute

log = logging.getLogger("pybind_serve.front")

OWNER_GONE_GRACE_S = 5.0  # how long a front whose owner died may take to stop before it exits regardless
_BACKSTOP_S = 3.0  # uvicorn's and grpc's own shutdown limits, past ours: they only act if ours failed


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
    max_header_bytes: int = 64 << 10
    max_header_count: int = 100
    read_timeout_s: float = 30.0
    idle_release_s: float = 10.0
    response_cache_bytes: int = 0  # this front's response cache (0: none)
    index: int = 0  # which front this is, of `Serve(fronts=N)`
    peers: tuple[str, ...] = ()  # every front's endpoint, this one's at ``index`` (none: the only front)
    grpc_reuse_port: bool = False  # the other fronts listen on the same gRPC port
    restrictions: tuple[dict[str, Any], ...] = ()  # `security.Restriction.to_wire` of each
    http_header_forward_pattern: str | None = None
    grpc_header_forward_pattern: str | None = None
    tls: dict[str, Any] | None = None  # `security.Tls.to_wire`: HTTPS and gRPC over TLS
    record: str | None = None  # the server's record for RemoteServe (`discovery`): a dead owner leaves it
    vertex_fd: int | None = None  # the Vertex AI port's socket (front 0 only)
    vertex_ai: dict[str, Any] | None = None  # `vertex_ai.VertexAI.to_wire`: its routes
    tracing: dict[str, Any] | None = None  # `tracing.Tracing.to_wire`: OpenTelemetry traces of requests
    access_log: bool = False  # a line per HTTP request (uvicorn's access log) and per gRPC call
    network_endpoint: str | None = None  # ``tcp://host:port`` for workers on other hosts (`network.NetworkPort`)


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the front decides when to stop, for all its servers at once."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Front:
    """The front process's parts, wired together."""

    def __init__(self, options: FrontOptions) -> None:
        self.options = options
        self.readiness = Readiness()
        cache = ResponseCache(options.response_cache_bytes) if options.response_cache_bytes else None
        self.models = self.readiness.models = Models(on_change=self.readiness.changed, cache=cache)
        self.metrics = Metrics(pending=self._pending_counts, system=SystemMetrics())
        self.arena = Arena(options.owner, front_tag(options.index, os.getpid()))
        self.context = zmq.asyncio.Context()
        self.router = self.context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.bind(options.endpoint)
        os.chmod(endpoint_path(options.endpoint), 0o600)  # only this user's processes may connect (RemoteServe too)
        self.network: NetworkPort | None = None  # workers on other hosts (a cluster backend's) connect there
        if options.network_endpoint is not None:
            self.network = NetworkPort(self.context, options.network_endpoint, os.environ.pop(SECRET_ENV, None))
        self.tracer = Tracer(options.tracing)
        self.dispatcher = Dispatcher(self.arena, self.send, self.metrics, self.tracer)
        self.remotes = Remotes(on_gone=self._remote_gone)
        self.regions = Regions() if options.system_shared_memory else None
        self.peers = Peers(self.context, options.index, list(options.peers)) if len(options.peers) > 1 else None
        if self.peers is not None:
            self.metrics.peers = self._peer_counters
            if self.regions is not None:
                self.regions.share = self._share_region
        self.settings = RuntimeSettings(self.tracer, LogSettings(options.log_level), self.models, self.peers)
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
            "queues": self._queues,
            "drain": self._drain,
            "status": self._status,
            "open": self._open,
            "adopt": self._adopt,
            "attach": self._attach,
            "detach": self._detach,
            "counters": self._counters,
            "region": self._region,
            "regions": self._regions,
            "settings": self._settings_changed,
            "settings_snapshot": self._settings_snapshot,
        }

    def _pending_counts(self) -> dict[tuple[str, int], int]:
        return {(e.spec.name, e.spec.version): e.scheduler.pending_count for e in self.models.entries()}

    def send(self, identity: bytes, frame: dict[str, Any]) -> None:
        # ROUTER sends never block (an unroutable frame is dropped), so the future needs no awaiting.
        if self.network is not None and identity in self.network.workers:
            self.network.send(identity, frame)
            return
        self.router.send_multipart([identity, encode(frame)])

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.readiness.stop)
        watchdog = threading.Thread(target=self._watch_lifeline, args=(loop,), name="lifeline", daemon=True)
        watchdog.start()
        await self._start_grpc()  # before the first ping is answered: its answer reports the port
        tasks = [loop.create_task(self._receive()), loop.create_task(self._housekeeping())]
        tasks += [loop.create_task(server.serve(sockets=[sock])) for server, sock in self._build_servers()]
        await self.readiness.stopping.wait()
        await self._shutdown(tasks)

    def _restrictions(self) -> tuple[Restriction, ...]:
        return tuple(Restriction.from_wire(r) for r in self.options.restrictions)

    async def _start_grpc(self) -> None:
        if self.options.grpc_port is None:
            return
        options = GrpcOptions(
            self.options.host,
            self.options.grpc_port,
            self.options.grpc_max_message_bytes,
            __version__,
            self.options.max_header_bytes,
            self.options.grpc_reuse_port,
            self._restrictions(),
            self.options.grpc_header_forward_pattern,
            Tls(**self.options.tls) if self.options.tls else None,
            access_log=self.options.access_log,
        )
        try:
            self._grpc, port = await start_server(
                self.models, self.metrics, self.readiness, options, self.regions, self.settings
            )
        except StartupError as exc:  # the owner raises it from run(), and stops us
            self._grpc_bound = {"grpc_error": {"type": type(exc).__name__, "message": str(exc)}}
        else:
            self._grpc_bound = {"grpc_port": port}

    def _watch_lifeline(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait for the owner's end of the lifeline to close (the owner is gone); then stop the front, and if
        its loop cannot do that within `OWNER_GONE_GRACE_S`, clean up and exit from here."""
        while os.read(self.options.lifeline_fd, 1):
            pass
        with contextlib.suppress(RuntimeError):  # the loop is closed: the front has stopped already
            loop.call_soon_threadsafe(self._owner_died)
        time.sleep(OWNER_GONE_GRACE_S)
        log.error("the front did not stop within %g s of its owner's death; exiting", OWNER_GONE_GRACE_S)
        self._remove_leftovers()
        os._exit(1)

    def _owner_died(self) -> None:
        log.warning("the process that started this server died; stopping")
        self.owner_gone = True
        self.readiness.stop()

    def _remove_leftovers(self) -> None:
        """What only a dead owner would have removed: every segment of the server, the ROUTER's socket file, and
        the server's record for RemoteServe."""
        remove_segments_of(self.options.owner)
        for path in (endpoint_path(self.options.endpoint), self.options.record):
            with contextlib.suppress(FileNotFoundError):
                if path is not None:
                    os.unlink(path)

    async def _housekeeping(self) -> None:
        """Twice per ``idle_release_s``: give back shared memory no batch used for that long and, once traffic
        stopped for a whole period, the heap pages that large requests left free (a burst must not keep the
        front at its peak size; trimming under load would only make the next requests fault the pages in)."""
        idle_s, sent, trimmed = self.options.idle_release_s, self.dispatcher.batches_sent, True
        while True:
            await asyncio.sleep(idle_s / 2)
            released = self.dispatcher.release_idle(time.monotonic(), idle_s)
            before, sent = sent, self.dispatcher.batches_sent
            if sent != before:
                trimmed = False
            elif released or (not trimmed and not self.dispatcher.busy):
                trim_heap()
                trimmed = True

    def _build_servers(self) -> list[tuple[_Server, socket.socket]]:
        options = HttpOptions(self.options.max_body_bytes, __version__)
        app = create_app(
            self.models,
            self.metrics,
            options,
            self.readiness,
            self.regions,
            self._restrictions(),
            self.options.http_header_forward_pattern,
            self.settings,
        )
        pairs: list[tuple[Any, int]] = [(app, self.options.http_fd)]
        if self.options.metrics_fd is not None:
            pairs.append((self._metrics_app(), self.options.metrics_fd))
        if self.options.vertex_fd is not None and self.options.vertex_ai is not None:
            pairs.append((VertexRoute(app, self.models, self.options.vertex_ai), self.options.vertex_fd))
        limits = ConnectionLimits(
            self.options.max_header_bytes, self.options.max_header_count, self.options.read_timeout_s
        )
        tls = self.options.tls
        for index, (app_, _fd) in enumerate(pairs):
            secure = tls is not None and index == 0  # the API port; /metrics stays plain, for scrapers
            config = uvicorn.Config(
                app_,
                log_level=self.options.log_level,
                access_log=self.options.access_log,
                lifespan="off",
                http=limited_protocol(limits),
                proxy_headers=False,  # nothing reads the client address: skip the middleware on every request
                # Only a backstop: `_shutdown` answers what is still open when drain_timeout_s has passed.
                timeout_graceful_shutdown=int(self.options.drain_timeout_s + _BACKSTOP_S),
                ssl_certfile=tls["certfile"] if secure and tls else None,
                ssl_keyfile=tls["keyfile"] if secure and tls else None,
                ssl_ca_certs=tls["client_ca"] if secure and tls else None,
                ssl_cert_reqs=ssl.CERT_REQUIRED if secure and tls and tls["client_ca"] else ssl.CERT_NONE,
            )
            self._servers.append(_Server(config))
        if self.options.access_log:  # each Config set uvicorn's loggers up again: its access lines at INFO
            logging.getLogger("uvicorn.access").setLevel(logging.INFO)
        return [(server, socket.socket(fileno=fd)) for server, (_, fd) in zip(self._servers, pairs, strict=True)]

    def _metrics_app(self) -> Starlette:
        async def metrics(_: Request) -> Response:
            text = (await self.metrics.totals()).render()
            return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

        return Starlette(routes=[Route("/metrics", metrics)])

    async def _receive(self) -> None:
        if self.network is None:
            await self._receive_local()
        else:
            await asyncio.gather(
                self._receive_local(), self.network.receive(partial(self._hello, inline=True), self._route)
            )

    async def _receive_local(self) -> None:
        while True:
            identity, data = await self.router.recv_multipart()
            try:
                self._route(identity, decode(data))
            except Exception:
                log.exception("could not handle a frame from %r", identity)

    def _route(self, identity: bytes, frame: dict[str, Any]) -> None:
        op = frame.get("op")
        if op in ("result", "error", "partial", "done", "started"):
            self.dispatcher.answer(identity, frame)
        elif op == "hello":
            self._hello(identity, frame)
        elif op == "failed":
            self._failed(identity, frame)
        elif op in self._control:
            asyncio.get_running_loop().create_task(self._answer(identity, frame))
        else:
            log.error("unknown frame op %r from %r", op, identity)

    def _hello(self, identity: bytes, frame: dict[str, Any], inline: bool = False) -> None:
        try:
            entry = self.models.find(frame["model"], frame["version"])
        except Exception:
            log.warning(
                "worker %r serves model %r v%s, which is not loaded", identity, frame["model"], frame["version"]
            )
            return
        pid = None if inline else frame.get("pid")  # a pid of another host is nothing to kill here
        owner_kills = bool(frame.get("owner_kills"))  # a cluster backend's worker: its owner kills it, not us
        self.dispatcher.register(identity, entry, frame["segments"], pid, frame.get("slots", 1), inline, owner_kills)

    def _failed(self, identity: bytes, frame: dict[str, Any]) -> None:
        with contextlib.suppress(ModelNotFoundError):  # unloaded meanwhile
            self.models.find(frame["model"], frame["version"]).worker_failed(frame["error"])

    async def _answer(self, identity: bytes, frame: dict[str, Any]) -> None:
        try:
            result = await self._control[frame["op"]](frame)
            reply = {"call": frame.get("call"), "ok": True, **(result or {})}
        except Exception as exc:
            error = str(exc) if isinstance(exc, StartupError) else f"{type(exc).__name__}: {exc}"
            reply = {"call": frame.get("call"), "ok": False, "error": error}
        self.send(identity, reply)

    async def _ping(self, _: dict[str, Any]) -> dict[str, Any]:
        network = {"network_endpoint": self.network.endpoint} if self.network is not None else {}
        return {"pid": os.getpid(), **self._grpc_bound, **network}

    async def _load(self, frame: dict[str, Any]) -> None:
        spec, remote = ModelSpec.from_wire(frame["spec"]), frame.get("remote")  # remote: a RemoteServe's id
        if remote is not None:
            self.remotes.check(remote)
        self.models.load(spec)
        self.remotes.loaded((spec.name, spec.version), remote)

    async def _unload(self, frame: dict[str, Any]) -> None:
        key = (frame["name"], frame["version"])
        if self.remotes.owner_of(key) != frame.get("remote"):
            return  # another binding (the owner's, or another RemoteServe's) took it over: it stays
        self.remotes.unloaded(key)
        entry = self.models.unload(*key)
        if entry is not None:
            await self.dispatcher.retire(entry, self.options.drain_timeout_s)

    async def _wait_ready(self, frame: dict[str, Any]) -> None:
        """Until every instance serves the model (as Triton loads every instance before the model is ready);
        `StartupError` at once if one could not start, or after ``wait_s``."""
        entry = self.models.find(frame["name"], frame["version"])
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(entry.wait_started(), frame["wait_s"])
        if entry.start_failed.is_set():
            raise StartupError(entry.reason)
        expected, up = entry.spec.instance_count, len(entry.workers)
        if up < expected:
            raise StartupError(f"{up} of its {expected} instances were ready within {frame['wait_s']:g} s")

    async def _status(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"ready": self.readiness()}

    async def _open(self, _: dict[str, Any]) -> None:
        self.readiness.open()  # the models bound before run() are loaded

    async def _adopt(self, frame: dict[str, Any]) -> None:
        """This front replaces one that died: take the shared-memory regions the other fronts hold, and ask the
        workers (``identities``, which reconnect to our endpoint by themselves) to say hello again."""
        if frame.get("regions", True) and self.peers is not None and self.regions is not None:
            for reply in await self.peers.call("regions"):
                for fields in reply["regions"]:
                    try:
                        self.regions.register(RegionSpec(**fields))
                    except InferenceError as exc:  # its segment was unlinked since: it cannot be reached here
                        log.warning("region %r is not usable through this front: %s", fields["name"], exc)
                break
        if self.peers is not None:  # the trace and log settings clients changed meanwhile
            for reply in await self.peers.call("settings_snapshot"):
                if reply.get("ok"):
                    self.settings.restore(reply["snapshot"])
                    break
        waiting = {identity.encode() for identity in frame["identities"]}
        deadline = time.monotonic() + frame.get("wait_s", 10.0)
        while (waiting := waiting - self.dispatcher.known()) and time.monotonic() < deadline:
            for identity in waiting:
                self.send(identity, {"op": "announce"})  # dropped until the worker has reconnected
                if self.network is not None:  # or it is on another host, and reconnects to the network port
                    self.network.send(identity, {"op": "announce"})
            await asyncio.sleep(0.05)

    async def _counters(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"counters": self.metrics.snapshot()}

    async def _peer_counters(self) -> list[dict[str, Any]]:
        assert self.peers is not None
        return [reply["counters"] for reply in await self.peers.call("counters") if reply.get("ok")]

    async def _region(self, frame: dict[str, Any]) -> None:
        """Another front registered or unregistered a region: the same here."""
        regions = enabled(self.regions)
        if frame["change"] == "register":
            regions.register(RegionSpec(**frame["fields"]))
        else:
            regions.unregister(frame["fields"]["name"])

    async def _regions(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"regions": [asdict(spec) for spec in enabled(self.regions).status()]}

    async def _share_region(self, change: str, fields: dict[str, Any]) -> list[str]:
        assert self.peers is not None
        replies = await self.peers.call("region", change=change, fields=fields)
        return [str(reply.get("error")) for reply in replies if not reply.get("ok")]

    async def _settings_changed(self, frame: dict[str, Any]) -> None:
        """Another front changed the trace or log settings: the same here."""
        self.settings.apply(frame["kind"], frame["model"], frame["changes"])

    async def _settings_snapshot(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"snapshot": self.settings.snapshot()}

    async def _queues(self, _: dict[str, Any]) -> dict[str, Any]:
        """Each model version's queue, busy workers and how long its oldest queued request has waited (ms): the
        autoscaling signals of a cluster backend; and the workers its owner must kill (``overran``: they passed
        ``execution_timeout_s``, and this front has already let them go)."""
        now = time.monotonic()
        models = [
            [
                e.spec.name,
                e.spec.version,
                e.scheduler.pending_count,
                self.dispatcher.busy_workers(e),
                round(e.scheduler.oldest_wait_s(now) * 1000),
            ]
            for e in self.models.entries()
        ]
        return {"models": models, "overran": sorted(i.decode() for i in self.dispatcher.overran)}

    async def _drain(self, frame: dict[str, Any]) -> dict[str, Any]:
        """A worker is scaled down: no new batches to it, those in flight answered first."""
        return {"drained": await self.dispatcher.drain(frame["identity"].encode(), frame["wait_s"])}

    async def _worker_gone(self, frame: dict[str, Any]) -> None:
        self.dispatcher.remove(frame["identity"].encode(), frame["why"], frame.get("retry", False))
        self.dispatcher.overran.discard(frame["identity"].encode())  # its owner killed it
        if self.network is not None:
            self.network.workers.discard(frame["identity"].encode())

    async def _attach(self, frame: dict[str, Any]) -> dict[str, Any]:
        """A `RemoteServe` attaches (again: ``known``; not known, this front was restarted since)."""
        return {"known": self.remotes.attach(frame), "pid": os.getpid()}

    async def _detach(self, frame: dict[str, Any]) -> None:
        """A `RemoteServe` closes, having unloaded its models: any it could not are unloaded now."""
        remote = self.remotes.detach(frame["id"])
        for name, version in remote.models if remote is not None else ():
            entry = self.models.unload(name, version)
            if entry is not None:
                await self.dispatcher.retire(entry, self.options.drain_timeout_s)

    def _remote_gone(self, remote: Remote) -> None:
        """A `RemoteServe` process ended: its workers ended with it; its models go, and its segments."""
        why = f"ended with its RemoteServe process (pid {remote.pid})"
        for identity in self.dispatcher.known():
            if identity.startswith(remote.worker_prefix):
                self.dispatcher.remove(identity, why)  # batches in flight fail; the last one fails the queue
        for name, version in remote.models:
            self.models.unload(name, version)
        remove_segments_of(remote.owner)

    async def _shutdown(self, tasks: list[asyncio.Task[Any]]) -> None:
        """Drain: the HTTP and gRPC servers stop taking requests and finish those in flight; whatever is still
        open after ``drain_timeout_s`` (at once if the owner died) is answered `UnavailableError`."""
        receiving, housekeeping, servers = tasks[0], tasks[1], tasks[2:]
        housekeeping.cancel()
        for server in self._servers:
            server.should_exit = True
            server.force_exit = self.owner_gone  # nobody is left to wait for
        if self._grpc is not None:
            servers.append(asyncio.ensure_future(self._grpc.stop(self.options.drain_timeout_s + _BACKSTOP_S)))
        drain_s = 0.0 if self.owner_gone else self.options.drain_timeout_s
        _, still_open = await asyncio.wait(servers, timeout=drain_s)
        if still_open:
            if self.owner_gone:
                why = "the process that started the server died"
            else:
                why = f"drain_timeout_s={self.options.drain_timeout_s:g} s passed before this request was answered"
            error = UnavailableError(f"the server is stopping: {why}")
            self.models.close(error)
            self.dispatcher.fail_all(error)
            await asyncio.wait(still_open)  # the handlers answer at once now
        self.models.close(UnavailableError("the server is stopping"))
        self.remotes.close()
        self.dispatcher.close()
        self.tracer.close()  # the spans not exported yet
        receiving.cancel()
        await asyncio.gather(receiving, housekeeping, *servers, return_exceptions=True)
        self.router.close(linger=0)
        if self.peers is not None:
            self.peers.close()
        self.context.term()
        self.arena.close()
        if self.regions is not None:
            self.regions.close()
        if self.owner_gone:
            self._remove_leftovers()


def _configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[pybind_serve front] %(levelname)s %(message)s"))
    logger = logging.getLogger("pybind_serve")
    logger.addHandler(handler)
    logger.setLevel(python_level(level))
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
