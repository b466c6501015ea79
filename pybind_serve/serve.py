"""`Serve`: bind Python functions as models and serve them over the KServe v2 / Triton protocol."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
import math
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import zmq

from .backend import Backend, FrontSite, WorkerPool, WorkerSite, front_calls
from .config import ModelConfig
from .discovery import ServerRecord, publish, record_path, withdraw
from .errors import ConfigurationError, StartupError
from .fronts import Fronts
from .linux import process_start_time
from .logs import configure as configure_logs
from .logs import level_problems, python_level
from .placement import resolve_devices, visible_gpus
from .request import Request
from .security import TOKEN_GROUPS, TOKEN_HEADER, Restriction, Tls, new_token, restriction_problems
from .spec import ModelSpec
from .supervisor import Supervisor
from .tensor import Tensor
from .tracing import Tracing
from .transport.channel import remove_stale_endpoints
from .transport.shm import new_owner, remove_segments_of, remove_stale_segments
from .vertex_ai import VertexAI
from .warmup import warmup_problems

__all__ = ["Serve"]

log = logging.getLogger("pybind_serve")

ModelFunction = Callable[[list[Request]], Any]
# 512 MiB of tensors (e.g. two 256 MiB inputs) plus room for the message's own fields.
GRPC_MAX_MESSAGE_BYTES = (512 + 16) << 20
GRPC_MESSAGE_LIMIT = (1 << 31) - 1  # gRPC's message sizes are C ints


class State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


@dataclass(frozen=True)
class _Binding:
    spec: ModelSpec
    fn: Any  # a function, a class, or a list of them (one per instance)


class Serve:
    """Serve bound Python functions over HTTP and gRPC (KServe v2 / Triton protocol), with dynamic batching.

    Lifecycle words follow PyTriton: `run` starts the server and returns at once (notebooks, tests),
    `serve` blocks until SIGINT/SIGTERM and then drains and stops, `stop` is idempotent. (uvicorn's ``run``
    blocks: ours does not.) Binding after `run` loads the model live; `unbind` unloads it. Other processes of the
    same user on this host may bind models into the running server too, with `RemoteServe` (docs/remote.md), unless
    ``allow_remote=False``.

    ``http_port`` / ``grpc_port`` / ``metrics_port`` default to Triton's 8000 / 8001 / 8002; 0 picks a free
    port (see `http_url`, `grpc_url`), None turns gRPC or metrics off. ``host`` is 127.0.0.1: pass
    ``"0.0.0.0"`` to serve other machines (e.g. in a container).

    Limits (all in docs/limits.md): ``max_body_bytes`` an HTTP request body (decompressed too),
    ``grpc_max_message_bytes`` a gRPC request or response message; ``max_header_bytes`` an HTTP request's line and
    headers (and a gRPC call's metadata), ``max_header_count`` its number of headers (HTTP 431 past either);
    ``read_timeout_s`` how long a client may take to send a request's headers, and the longest pause in its body
    (HTTP 408). ``drain_timeout_s``: on `stop` (or SIGTERM), how long requests in flight may take; those still open
    then are answered 503 (gRPC UNAVAILABLE). Stopping takes at most that plus a few seconds, whatever the bound
    functions do. ``idle_release_s``: shared memory that a burst of requests took, unused this long, is given
    back (and the processes' free heap pages with it). ``response_cache_bytes``: the memory of the response cache
    of the models bound with ``ModelConfig(response_cache=True)`` (least recently used responses evicted first; 0:
    no cache), each front process's own. ``system_shared_memory=True`` turns on
    the KServe system shared-memory extension: clients on this host register /dev/shm regions and pass
    tensors through them instead of the request (``tritonclient.utils.shared_memory``, ``perf_analyzer
    --shared-memory=system``, ``ModelClient(..., shared_memory=True)``). It is off by default, as any local
    process allowed to reach the port could then have the server map its /dev/shm files.
    ``vertex_ai=VertexAI(...)`` also serves Google Vertex AI's predict and health routes on a port of their own
    (`VertexAI`).
    ``tracing=Tracing(...)`` traces requests with OpenTelemetry (the ``tracing`` extra; docs/tracing.md); without
    it, a client may still turn tracing on through Triton's trace extension (``POST /v2/trace/setting``).
    ``backend=RayBackend(...)`` runs the bound models' workers on a Ray cluster instead of this host's processes,
    with the same ``bind`` calls (`pybind_serve.cluster`, docs/scale_out.md); the fronts stay on this host.

    ``log_level`` (``critical``, ``error``, ``warning``, ``info``, ``debug``, ``trace``) is that of pybind_serve's
    own lines (``info``: fronts started, models ready, stopping) and uvicorn's, written to stderr unless the
    application set up logging itself. ``access_log=True`` logs one line per HTTP request (uvicorn's access log)
    and per gRPC call, whatever the level. `serve` prints where the server listens once it is up (unless
    ``log_level`` is ``error`` or ``critical``); `run` prints nothing.

    >>> import numpy as np
    >>> from pybind_serve import Serve, Tensor, batch
    >>> @batch
    ... def add_sub(a, b):
    ...     return {"add": a + b, "sub": a - b}
    >>> with Serve(http_port=0, grpc_port=0, metrics_port=0) as s:
    ...     s.bind("add_sub", add_sub,
    ...            inputs=[Tensor("a", np.float32, (-1,)), Tensor("b", np.float32, (-1,))],
    ...            outputs=[Tensor("add", np.float32, (-1,)), Tensor("sub", np.float32, (-1,))])
    ...     _ = s.run()
    ...     s.is_ready()
    True
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        http_port: int = 8000,
        grpc_port: int | None = 8001,
        metrics_port: int | None = 8002,
        max_body_bytes: int = 512 << 20,
        grpc_max_message_bytes: int = GRPC_MAX_MESSAGE_BYTES,
        max_header_bytes: int = 64 << 10,
        max_header_count: int = 100,
        read_timeout_s: float = 30.0,
        drain_timeout_s: float = 30.0,
        idle_release_s: float = 10.0,
        startup_timeout_s: float = 30.0,
        log_level: str = "warning",
        access_log: bool = False,
        system_shared_memory: bool = False,
        fronts: int = 1,
        allow_remote: bool = True,
        restricted: Sequence[Restriction] = (),
        access_token: str | bool | None = None,
        http_header_forward_pattern: str | None = None,
        grpc_header_forward_pattern: str | None = None,
        tls_certfile: str | None = None,
        tls_keyfile: str | None = None,
        tls_client_ca: str | None = None,
        response_cache_bytes: int = 64 << 20,
        vertex_ai: VertexAI | None = None,
        tracing: Tracing | None = None,
        backend: Backend | None = None,
    ) -> None:
        ports = {"http": http_port, "grpc": grpc_port, "metrics": metrics_port}
        problems = _port_problems(ports) + _size_problems(max_body_bytes, grpc_max_message_bytes)
        problems += _limit_problems(
            max_header_bytes=max_header_bytes,
            max_header_count=max_header_count,
            read_timeout_s=read_timeout_s,
            drain_timeout_s=drain_timeout_s,
            startup_timeout_s=startup_timeout_s,
            idle_release_s=idle_release_s,
            fronts=fronts,
        )
        token = new_token() if access_token is True else access_token or None
        restrictions = tuple(restricted)
        if token is not None:
            restrictions += (Restriction(TOKEN_GROUPS, TOKEN_HEADER, token),)
        problems += restriction_problems(restrictions) + _pattern_problems(
            http_header_forward_pattern=http_header_forward_pattern,
            grpc_header_forward_pattern=grpc_header_forward_pattern,
        )
        tls = None
        if tls_certfile is not None or tls_keyfile is not None or tls_client_ca is not None:
            if tls_certfile is None or tls_keyfile is None:
                problems.append("TLS needs both tls_certfile and tls_keyfile")
            else:
                tls = Tls(tls_certfile, tls_keyfile, tls_client_ca)
                problems += tls.problems()
        if vertex_ai is not None and not isinstance(vertex_ai, VertexAI):
            problems.append(f"vertex_ai must be a VertexAI, got {type(vertex_ai).__name__}")
        if type(response_cache_bytes) is not int or response_cache_bytes < 0:
            problems.append(f"response_cache_bytes must be an int >= 0 (0: no cache), got {response_cache_bytes!r}")
        problems += level_problems(log_level) + _flag_problems(access_log=access_log)
        if tracing is not None:
            problems += _tracing_problems(tracing)
        if backend is not None and not isinstance(backend, Backend):
            problems.append(f"backend must be a worker backend such as RayBackend, got {type(backend).__name__}")
        if problems:
            raise ConfigurationError.collect("Serve", problems)
        self.backend = backend
        self.tracing = tracing
        self.response_cache_bytes = response_cache_bytes
        self.vertex_ai = vertex_ai
        self.tls = tls
        self.restricted, self._access_token = restrictions, token
        self.http_header_forward_pattern = http_header_forward_pattern
        self.grpc_header_forward_pattern = grpc_header_forward_pattern
        self.host, self._ports = host, ports
        self.max_body_bytes, self.grpc_max_message_bytes = max_body_bytes, grpc_max_message_bytes
        self.max_header_bytes, self.max_header_count = max_header_bytes, max_header_count
        self.read_timeout_s, self.idle_release_s = read_timeout_s, idle_release_s
        self.drain_timeout_s, self.startup_timeout_s = drain_timeout_s, startup_timeout_s
        self.log_level, self.access_log = log_level.lower(), access_log
        self.system_shared_memory = bool(system_shared_memory)
        self.fronts = fronts
        self.allow_remote = bool(allow_remote)
        self._state = State.NEW
        self._bindings: dict[tuple[str, int], _Binding] = {}
        self._lock = threading.RLock()
        self._fronts: Fronts | None = None
        self._replica_endpoints: tuple[str, ...] = ()  # a cluster backend's front replicas on its other hosts
        self._context: zmq.Context[Any] | None = None
        self._supervisor: WorkerPool | None = None
        self._lifeline: tuple[int, int] | None = None
        self._owner = new_owner()
        self._stop_event = threading.Event()
        self._record: str | None = None  # the path of its record for `RemoteServe` (`discovery`) while it runs

    # -- binding -------------------------------------------------------------------------------------------

    def bind(
        self,
        name: str,
        fn: ModelFunction | type | Sequence[ModelFunction | type],
        inputs: Sequence[Tensor],
        outputs: Sequence[Tensor],
        config: ModelConfig | None = None,
        version: int = 1,
        strict: bool = False,
    ) -> None:
        """Serve ``fn`` as model ``name`` (version ``version``); re-binding a name replaces it.

        ``fn`` takes a list of `Request` and returns one dict of outputs per request; decorate it with
        ``@batch`` or ``@sample`` to write it over arrays instead. ``fn`` may also be a class: each worker then
        builds its own instance (``cls(context)`` with its `WorkerContext`, or ``cls()``) and serves it, so a
        model is loaded where it runs, on its device; or a list of functions (or classes), one per instance.
        With ``strict`` every response is checked against ``outputs`` (names, dtypes, shapes). After `run` the
        model is loaded live and ``bind`` returns once it is ready (if it cannot start, ``bind`` raises
        `StartupError` saying why, and the model is not bound).
        """
        spec = _spec(name, fn, inputs, outputs, config or ModelConfig(), version, strict, here=self.backend is None)
        if spec.config.response_cache and not self.response_cache_bytes:
            raise ConfigurationError.collect(
                f"bind({name!r})",
                ["ModelConfig(response_cache=True) needs a cache: this Serve has response_cache_bytes=0"],
            )
        with self._lock:
            if self._state is State.STOPPED:
                raise StartupError("this Serve was stopped; create a new one")
            previous = self._bindings.get((name, version))
            self._bindings[(name, version)] = _Binding(spec, fn)
            if self._state is State.RUNNING:
                try:
                    self._load(self._bindings[(name, version)])
                except BaseException:
                    del self._bindings[(name, version)]
                    with contextlib.suppress(StartupError):
                        self._unload(name, version)
                    if previous is not None:
                        log.warning("%s: the model it replaced was unloaded too", spec.label)
                    raise

    def unbind(self, name: str, version: int | None = None) -> None:
        """Stop serving a model (every version of it unless ``version`` is given)."""
        with self._lock:
            keys = [k for k in self._bindings if k[0] == name and version in (None, k[1])]
            if not keys:
                raise ConfigurationError(f"no model {name!r}{'' if version is None else f' v{version}'} is bound")
            for key in keys:
                del self._bindings[key]
                if self._state is State.RUNNING:
                    self._unload(*key)

    # -- lifecycle -----------------------------------------------------------------------------------------

    def run(self) -> Serve:
        """Start serving and return at once, with every bound model ready. Raises `StartupError`."""
        with self._lock:
            if self._state is State.RUNNING:
                return self
            if self._state is State.STOPPED:
                raise StartupError("this Serve was stopped; create a new one")
            try:
                self._start()
            except BaseException:
                self._teardown()
                self._state = State.STOPPED
                raise
            self._state = State.RUNNING
        return self

    def serve(self) -> None:
        """Start (if needed) and block until SIGINT/SIGTERM or `stop`, then drain requests in flight and stop.

        Once up, it prints where it listens on stderr (unless ``log_level`` is ``error`` or ``critical``)."""
        self.run()
        if python_level(self.log_level) <= logging.WARNING:
            print(self._announcement(), file=sys.stderr, flush=True)
        restore = self._catch_signals()
        try:
            self._stop_event.wait()
        finally:
            restore()
            self.stop()

    def stop(self) -> None:
        """Drain requests in flight, stop every process, release every shared-memory segment; idempotent."""
        with self._lock:
            if self._state is State.STOPPED:
                return
            running, self._state = self._state is State.RUNNING, State.STOPPED
            if running:
                log.info("stopping: requests in flight have up to %g s to finish", self.drain_timeout_s)
            self._teardown()
            if running:
                log.info("stopped")
        self._stop_event.set()

    def is_ready(self) -> bool:
        """Whether the server is up and every bound model has a worker."""
        fronts = self._fronts
        return self._state is State.RUNNING and fronts is not None and fronts.ready()

    @property
    def access_token(self) -> str | None:
        """The token that callers of the guarded endpoint groups send in the ``triton-access-token`` header
        (``Serve(access_token=True)`` generates one), or None."""
        return self._access_token

    @property
    def http_port(self) -> int:
        return self._port("http")

    @property
    def grpc_port(self) -> int | None:
        return None if self._ports["grpc"] is None else self._port("grpc")

    @property
    def metrics_port(self) -> int | None:
        return None if self._ports["metrics"] is None else self._port("metrics")

    @property
    def http_url(self) -> str:
        """``http://host:port`` (``https://`` with TLS) of the KServe v2 REST endpoint (the bound port, also when
        0 was asked)."""
        return f"{'https' if self.tls else 'http'}://{_url_host(self.host)}:{self.http_port}"

    @property
    def grpc_url(self) -> str | None:
        """``host:port`` of the KServe v2 gRPC endpoint, as gRPC channels and ``tritonclient.grpc`` take it
        (no scheme); None when gRPC is off."""
        port = self.grpc_port
        return None if port is None else f"{_url_host(self.host)}:{port}"

    @property
    def metrics_url(self) -> str | None:
        """``http://host:port/metrics``, or None when metrics are off."""
        port = self.metrics_port
        return None if port is None else f"http://{_url_host(self.host)}:{port}/metrics"

    @property
    def vertex_ai_port(self) -> int | None:
        """The port of the Vertex AI routes (`VertexAI`), or None when they are off."""
        return None if self.vertex_ai is None else self._ports.get("vertex")

    def __enter__(self) -> Serve:
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f" at {self.http_url}" if self._state is State.RUNNING else ""
        return f"<Serve {self._state.value}{where}, models {sorted(n for n, _ in self._bindings)}>"

    # -- internals -----------------------------------------------------------------------------------------

    def _announcement(self) -> str:
        """The line `serve` prints once the server is up: what it serves, where, and how to stop it."""
        labels = [f"{name} v{version}" for name, version in sorted(self._bindings)]
        plural = "s" * (len(labels) != 1)
        models = f"{len(labels)} model{plural} ({', '.join(labels)})" if labels else "no models yet"
        also = [f"gRPC {self.grpc_url}"] if self.grpc_url else []
        if self.metrics_url:
            also.append(f"metrics {self.metrics_url}")
        if self.vertex_ai_port is not None:
            also.append(f"Vertex AI port {self.vertex_ai_port}")
        where = [self.http_url + (f" ({', '.join(also)})" if also else "")]
        if self.host in ("0.0.0.0", "", "::"):
            where.append("on every network interface")
        if self.fronts > 1:
            where.append(f"with {self.fronts} front processes")
        return f"pybind_serve: serving {models} on {', '.join(where)}; Ctrl-C stops"

    def _bound_specs(self) -> list[ModelSpec]:
        """The specs of the models bound from this process, by name and version."""
        with self._lock:
            return [self._bindings[key].spec for key in sorted(self._bindings)]

    def _override(self, **options: Any) -> None:
        """Change options given to the constructor, before the server starts (the CLI's ``--http-port`` ...):
        ``host``, ``http_port``, ``grpc_port``, ``metrics_port``, ``fronts``, ``log_level``, ``access_log``.
        `ConfigurationError` for a value the constructor would refuse, `StartupError` once started."""
        known = {"host", "http_port", "grpc_port", "metrics_port", "fronts", "log_level", "access_log"}
        if unknown := sorted(set(options) - known):
            raise TypeError(f"options that cannot be overridden: {unknown}")
        with self._lock:
            if self._state is not State.NEW:
                raise StartupError(f"this Serve is {self._state.value} already: its options cannot change")
            ports = {kind: options.get(f"{kind}_port", self._ports[kind]) for kind in ("http", "grpc", "metrics")}
            fronts, level = options.get("fronts", self.fronts), options.get("log_level", self.log_level)
            access_log = options.get("access_log", self.access_log)
            problems = _port_problems(ports) + _limit_problems(fronts=fronts) + level_problems(level)
            problems += _flag_problems(access_log=access_log)
            if problems:
                raise ConfigurationError.collect("Serve", problems)
            self._ports.update(ports)
            self.host, self.fronts = options.get("host", self.host), fronts
            self.log_level, self.access_log = level.lower(), access_log

    def _port(self, kind: str) -> int:
        port = self._ports[kind]
        if self._state is not State.RUNNING and port == 0:
            raise StartupError(f"the {kind} port is chosen when the server starts: call run() first")
        return int(port or 0)

    def _start(self) -> None:
        configure_logs(self.log_level, "pybind_serve")
        for name in remove_stale_segments():
            log.info("removed shared memory %s of a server that died", name)
        for name in remove_stale_endpoints():
            log.info("removed socket file %s of a server that died", name)
        if self.vertex_ai is not None:  # its routes may come from the environment: read them now
            self.vertex_ai = self.vertex_ai.resolved()
            self._ports["vertex"] = self.vertex_ai.port
        self._record = record_path()  # the fronts remove it if this process dies
        self._lifeline = os.pipe()
        self._context = zmq.Context()
        self._fronts = Fronts(
            self.fronts,
            self.host,
            self._ports,
            self._front_options(),
            self._lifeline[0],
            self._context,
            self.startup_timeout_s,
            self.drain_timeout_s + 5,
            network=self.backend.open() if self.backend is not None else None,
        )
        self._fronts.start()
        self._ports.update(self._fronts.ports)
        log.info("front process%s started (pid %s)", "es" * (self.fronts > 1), ", ".join(map(str, self._fronts.pids)))
        self._start_replicas()
        self._supervisor = self._worker_pool()
        for binding in list(self._bindings.values()):  # `_load` replaces each with its placed spec
            self._load(binding)
        self._fronts.call("open", self.startup_timeout_s)  # from now on /v2/health/ready may say 200
        self._fronts.watch(self._front_restarted)
        publish(self._server_record(), self._record)

    def _start_replicas(self) -> None:
        """A cluster backend's front replicas on its other hosts, called from then on as this host's fronts."""
        fronts = self._fronts
        assert fronts is not None
        if self.backend is None or fronts.network is None:
            return
        ports = {kind: self._ports.get(kind) for kind in ("http", "grpc", "metrics")}
        site = FrontSite(
            self._front_options(),
            self.host,
            ports,
            fronts.network,
            self._owner,
            self.startup_timeout_s,
            self.drain_timeout_s + 5,
        )
        replicas = self.backend.front_replicas(site)
        fronts.add_remote(replicas.members, replicas.close)
        self._replica_endpoints = replicas.endpoints()

    def _worker_pool(self) -> WorkerPool:
        """What starts and restarts the workers: this host's threads and processes, or the backend's."""
        assert self._fronts is not None and self._lifeline is not None and self._context is not None
        fronts = self._fronts
        if self.backend is None or fronts.network is None:
            return Supervisor.create(
                fronts.endpoints, self._owner, self._lifeline, self._context, self._worker_gone, self.idle_release_s
            )
        network_endpoints = tuple(e for e in fronts.network_endpoints if e is not None)
        site = WorkerSite(
            tuple(fronts.endpoints),
            network_endpoints,
            fronts.network,
            self._owner,
            self.idle_release_s,
            self._replica_endpoints,
        )
        return self.backend.workers(site, self._worker_gone, front_calls(fronts))

    def _front_options(self) -> dict[str, Any]:
        return {
            "owner": self._owner,
            "record": self._record,
            "max_body_bytes": self.max_body_bytes,
            "grpc_max_message_bytes": self.grpc_max_message_bytes,
            "drain_timeout_s": self.drain_timeout_s,
            "log_level": self.log_level,
            "access_log": self.access_log,
            "system_shared_memory": self.system_shared_memory,
            "max_header_bytes": self.max_header_bytes,
            "max_header_count": self.max_header_count,
            "read_timeout_s": self.read_timeout_s,
            "idle_release_s": self.idle_release_s,
            "restrictions": [r.to_wire() for r in self.restricted],
            "http_header_forward_pattern": self.http_header_forward_pattern,
            "grpc_header_forward_pattern": self.grpc_header_forward_pattern,
            "tls": self.tls.to_wire() if self.tls is not None else None,
            "response_cache_bytes": self.response_cache_bytes,
            "vertex_ai": self.vertex_ai.to_wire() if self.vertex_ai is not None else None,
            "tracing": self.tracing.to_wire() if self.tracing is not None else None,
        }

    def _front_restarted(self, index: int) -> None:
        """A front died and was started again: give it the models, and let it find their workers."""
        # Not a plain `with self._lock`: `stop` holds the lock while it waits for this thread to end.
        while not self._lock.acquire(timeout=0.1):
            if self._state is not State.RUNNING:
                return
        try:
            if self._state is not State.RUNNING or self._fronts is None or self._supervisor is None:
                return
            for binding in self._bindings.values():
                self._fronts.call_one(index, "load", self.startup_timeout_s, spec=binding.spec.to_wire())
            identities = self._supervisor.identities()
            self._fronts.call_one(index, "adopt", self.startup_timeout_s + 1, identities=identities, wait_s=10.0)
            self._fronts.call_one(index, "open", self.startup_timeout_s)
            log.warning("front process %d is serving again", index)
        finally:
            self._lock.release()

    def _call(self, op: str, timeout_s: float, **fields: Any) -> None:
        assert self._fronts is not None
        try:
            self._fronts.call(op, timeout_s, **fields)
        except StartupError as exc:
            raise StartupError(f"the front refused {op!r}: {exc}") from None

    def _load(self, binding: _Binding) -> None:
        assert self._supervisor is not None and self._fronts is not None
        spec = self._supervisor.place(binding.spec)  # with a backend, "all" means its cluster's GPUs: known now
        if spec is not binding.spec:
            binding = self._bindings[(spec.name, spec.version)] = _Binding(spec, binding.fn)
        old = self._supervisor.group(spec.name, spec.version)
        self._call("load", self.startup_timeout_s, spec=spec.to_wire())
        if old is not None:
            self._supervisor.stop_group(spec.name, spec.version)
        self._supervisor.start(spec, binding.fn)
        try:
            self._fronts.call(
                "wait_ready",
                self.startup_timeout_s + 1,
                name=spec.name,
                version=spec.version,
                wait_s=self.startup_timeout_s,
            )
        except StartupError as exc:
            raise StartupError(f"{spec.label} did not become ready: {exc}") from None
        log.info("%s is ready: %s", spec.label, _where_it_runs(spec))

    def _unload(self, name: str, version: int) -> None:
        assert self._supervisor is not None
        self._call("unload", self.drain_timeout_s + 5, name=name, version=version)
        self._supervisor.stop_group(name, version)
        log.info("model %r v%d unloaded", name, version)

    def _worker_gone(self, identity: str, why: str, retry: bool = False) -> None:
        """A worker is gone: its batch in flight fails (``retry``: goes to another worker, `Dispatcher.remove`)."""
        if self._fronts is not None:
            self._fronts.tell("worker_gone", identity=identity, why=why, retry=retry)

    def _server_record(self) -> ServerRecord:
        """What a `RemoteServe` of this host needs to bind models into this server (nothing but a refusal without
        ``allow_remote``)."""
        assert self._fronts is not None
        return ServerRecord(
            pid=os.getpid(),
            started=process_start_time(os.getpid()) or 0,
            owner=self._owner,
            host=self.host,
            http_port=self.http_port,
            grpc_port=self.grpc_port,
            allow_remote=self.allow_remote,
            fronts=tuple(self._fronts.endpoints) if self.allow_remote else (),
            drain_timeout_s=self.drain_timeout_s,
            idle_release_s=self.idle_release_s,
        )

    def _teardown(self) -> None:
        if self._record is not None:  # first: RemoteServe processes learn that the server stops
            withdraw(self._record)
            self._record = None
        if self._fronts is not None:
            self._fronts.close()
        if self._supervisor is not None:
            self._supervisor.close()
        if self.backend is not None:
            self.backend.close()
        if self._context is not None:
            self._context.term()
        if self._lifeline is not None:
            for fd in self._lifeline:
                os.close(fd)
        self._fronts = self._context = self._supervisor = self._lifeline = None
        remove_segments_of(self._owner)

    def _catch_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        handlers = {
            sig: signal.signal(sig, lambda *_: self._stop_event.set()) for sig in (signal.SIGINT, signal.SIGTERM)
        }

        def restore() -> None:
            for sig, old in handlers.items():
                signal.signal(sig, old)

        return restore


def _spec(
    name: str,
    fn: Any,
    inputs: Sequence[Tensor],
    outputs: Sequence[Tensor],
    config: ModelConfig,
    version: int,
    strict: bool,
    here: bool = True,  # devices are this host's GPUs; False: a backend's cluster's, resolved by its pool at load
) -> ModelSpec:
    problems = []
    if not isinstance(name, str) or not name or "/" in name:
        problems.append(f"name must be a non-empty string without '/', got {name!r}")
    functions = list(fn) if isinstance(fn, (list, tuple)) else [fn]
    if not functions or not all(callable(f) for f in functions):
        got = type(fn).__name__ if not isinstance(fn, (list, tuple)) else f"a list of {len(functions)}"
        problems.append(f"fn must be callable, a class, or a non-empty list of them, got {got}")
    for kind, tensors in (("inputs", inputs), ("outputs", outputs)):  # none at all is allowed (Triton's too)
        if isinstance(tensors, (str, Tensor)) or not all(isinstance(t, Tensor) for t in tensors):
            problems.append(f"{kind} must be a list of Tensor")
        elif len({t.name for t in tensors}) != len(tensors):
            problems.append(f"{kind} have duplicate names: {[t.name for t in tensors]}")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        problems.append(f"version must be an int >= 1, got {version!r}")
    if not isinstance(config, ModelConfig):
        problems.append(f"config must be a ModelConfig, got {type(config).__name__}")
    elif config.devices is not None and here:
        try:  # "all", a count: the GPUs of this host, now
            config = dataclasses.replace(config, devices=resolve_devices(config.devices, visible_gpus()))
        except ConfigurationError as exc:
            problems.append(str(exc))
    if isinstance(config, ModelConfig) and not problems:  # the warmups against the inputs, and their data files
        problems += warmup_problems(config.warmup, inputs, config.batching)
    if problems:
        raise ConfigurationError.collect(f"bind({name!r})", problems)
    placed = config.instances is not None or config.devices is not None  # else: one thread per function
    threads = 1 if placed else len(functions)
    spec = ModelSpec(name, version, tuple(inputs), tuple(outputs), config, strict, threads)
    unknown = config.devices == "all"  # a cluster's GPUs: the pool checks once it knows them
    if isinstance(fn, (list, tuple)) and placed and not unknown and len(fn) != (count := spec.instance_count):
        raise ConfigurationError.collect(
            f"bind({name!r})", [f"{len(fn)} functions for {count} instances: give one per instance"]
        )
    return spec


def _port_problems(ports: dict[str, int | None]) -> list[str]:
    return [
        f"{kind}_port must be a port number (0 = any free port), got {port!r}"
        for kind, port in ports.items()
        if (port is not None or kind == "http") and not (type(port) is int and 0 <= port <= 65535)
    ]


def _flag_problems(**flags: object) -> list[str]:
    return [f"{name} must be True or False, got {value!r}" for name, value in flags.items() if type(value) is not bool]


def _where_it_runs(spec: ModelSpec) -> str:
    """How a model's instances run, for the log: ``1 thread in this process``, ``2 worker processes on cuda:0``."""
    config, count = spec.config, spec.instance_count
    if config.instances is None and config.devices is None:
        return f"{count} thread{'s' * (count != 1)} in this process"
    devices = f" on {', '.join(map(str, config.devices))}" if isinstance(config.devices, tuple) else ""
    return f"{count} worker process{'es' * (count != 1)}{devices}"


def _tracing_problems(tracing: object) -> list[str]:
    if not isinstance(tracing, Tracing):
        return [f"tracing must be a Tracing, got {type(tracing).__name__}"]
    return [f"tracing: {problem}" for problem in tracing.problems()]


def _pattern_problems(**patterns: str | None) -> list[str]:
    problems = []
    for name, pattern in patterns.items():
        if pattern is None:
            continue
        try:
            re.compile(pattern)
        except (re.error, TypeError) as exc:
            problems.append(f"{name} must be a regular expression, got {pattern!r}: {exc}")
    return problems


def _size_problems(max_body_bytes: int, grpc_max_message_bytes: int) -> list[str]:
    problems = []
    if type(max_body_bytes) is not int or max_body_bytes < 1:
        problems.append(f"max_body_bytes must be a positive int, got {max_body_bytes!r}")
    if type(grpc_max_message_bytes) is not int or not 1 <= grpc_max_message_bytes <= GRPC_MESSAGE_LIMIT:
        problems.append(
            f"grpc_max_message_bytes must be an int in 1..{GRPC_MESSAGE_LIMIT}, got {grpc_max_message_bytes!r}"
        )
    return problems


def _limit_problems(**limits: float) -> list[str]:
    problems = []
    for name, value in limits.items():
        if name.endswith("_s"):
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < math.inf):
                problems.append(f"{name} must be a number of seconds > 0, got {value!r}")
        elif type(value) is not int or value < 1:
            problems.append(f"{name} must be a positive int, got {value!r}")
    return problems


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
