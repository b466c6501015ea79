"""`RemoteServe`: bind models into a server that another process of this host runs (PyTriton's ``RemoteTriton``).

A `Serve` that runs publishes a record (`discovery`) that the processes of its user on its host can read: its
ports and its fronts' control endpoints. `RemoteServe` finds the server by the port of its URL, attaches to every
front, and binds models as `Serve.bind` does, with the same machinery: the model's function runs in *this*
process (a worker thread, or worker processes started and restarted by this process's own `Supervisor`), its
workers connect to every front, and the fronts route the model's requests to them. Remote models are served like
the server's own: repository index, readiness, config, statistics, metrics.

Lifetimes:

- `close` (or leaving the ``with`` block) unloads every model bound here, letting requests in flight finish
  (as `Serve.unbind` does), then stops the workers; the server and its other models go on serving.
- When this process ends without closing (SIGKILL too), every front sees it at once (it watches this process
  through a pidfd): batches in flight fail (`WorkerDiedError`), queued requests fail (`ModelNotReadyError`), and
  the models are unloaded.
- When the server stops (or its process dies), a thread of this process notices within a fraction of a second
  (the record gone and the fronts ended, or the server's process ended) and stops the workers; `bind` and
  `unbind` then raise `StartupError`. A front that died and was restarted gets this process's models back.
"""

from __future__ import annotations

import atexit
import enum
import logging
import math
import os
import secrets
import select
import signal
import threading
from collections.abc import Callable, Sequence
from functools import partial
from types import TracebackType
from typing import Any

import zmq

from .config import ModelConfig
from .discovery import ServerRecord, find_server
from .errors import ConfigurationError, StartupError
from .linux import process_start_time
from .serve import ModelFunction, _Binding, _spec
from .supervisor import Supervisor
from .tensor import Tensor
from .transport.channel import ControlClient
from .transport.shm import new_owner, remove_segments_of

__all__ = ["RemoteServe"]

log = logging.getLogger("pybind_serve")

WATCH_INTERVAL_S = 0.2  # how often this process looks at the server's processes
REATTACH_TIMEOUT_S = 1.0  # how long one try to attach to a restarted front may take


class _State(enum.Enum):
    NEW = "new"
    CONNECTED = "connected"
    CLOSED = "closed"


class _Watch:
    """A process of this host watched through a pidfd: `ended` is exact (a later process given the same pid is
    another one; a zombie has ended)."""

    def __init__(self, pid: int, started: int | None = None) -> None:
        self.pid = pid
        try:
            self._fd = os.pidfd_open(pid)
        except ProcessLookupError:
            self._fd = -1
        if self._fd >= 0 and started is not None and process_start_time(pid) != started:
            self.close()  # the pid names another process now: the one asked for has ended

    def ended(self) -> bool:
        return self._fd < 0 or bool(select.select([self._fd], [], [], 0)[0])

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _Lines:
    """This process's control lines to the server's fronts, each front watched once it has answered."""

    def __init__(self, context: zmq.Context[Any], endpoints: Sequence[str]) -> None:
        self._controls = [ControlClient(context, endpoint) for endpoint in endpoints]
        self._watches: list[_Watch | None] = [None] * len(endpoints)

    def __len__(self) -> int:
        return len(self._controls)

    def alive(self, index: int) -> bool:
        watch = self._watches[index]
        return watch is None or not watch.ended()

    def attach(self, index: int, timeout_s: float, **fields: Any) -> bool:
        """Attach to front ``index``; whether it is another process than the one attached to before (it was
        restarted: it lacks this process's models). Not the front's own ``known``: an attach sent while it was
        down may reach its replacement before this one."""
        reply = self._controls[index].call("attach", timeout_s, **fields)  # no liveness check: it may be restarting
        if not reply.get("ok"):
            raise StartupError(reply.get("error", "the front refused 'attach'"))
        previous, self._watches[index] = self._watches[index], _Watch(reply["pid"])
        if previous is not None:
            previous.close()
        return previous is None or previous.pid != reply["pid"]

    def call_one(self, index: int, op: str, timeout_s: float, **fields: Any) -> dict[str, Any]:
        reply = self._controls[index].call(op, timeout_s, alive=partial(self.alive, index), **fields)
        if not reply.get("ok"):
            raise StartupError(reply.get("error", f"the front refused {op!r}"))
        return reply

    def call(self, op: str, timeout_s: float, **fields: Any) -> list[dict[str, Any]]:
        """Ask every front, one after the other. `StartupError` if one refuses or is gone."""
        return [self.call_one(index, op, timeout_s, **fields) for index in range(len(self))]

    def tell(self, op: str, **fields: Any) -> None:
        """Tell every live front, not minding those that are gone or do not answer within 5 s."""
        for index in range(len(self)):
            if self.alive(index):
                try:
                    self.call_one(index, op, 5.0, **fields)
                except StartupError:
                    log.warning("front %d did not take %r", index, op)

    def close(self) -> None:
        for control in self._controls:
            control.close()
        for watch in self._watches:
            if watch is not None:
                watch.close()


class RemoteServe:
    """Bind models into a running `Serve` of another process of this host (PyTriton's ``RemoteTriton``).

    ``url`` is the server's HTTP or gRPC address as clients use it (``"localhost:8000"``,
    ``"http://127.0.0.1:8000"``, ``"grpc://localhost:8001"``): only its port matters, and its host must be this
    machine. `connect` finds that server (waiting up to ``timeout_s`` for one to start) and attaches; ``bind``
    takes `Serve.bind`'s arguments, and the function runs in this process (``instances=N`` or ``devices=``:
    in worker processes this process starts). Binding before `connect` loads the models when it connects; after,
    `bind` returns once the model is ready. `close` (alias `stop`) unloads them, letting requests in flight
    finish; the server goes on. Only processes of the server's user can attach, and ``Serve(allow_remote=False)``
    refuses them. See docs/remote.md.

    >>> import numpy as np
    >>> from pybind_serve import RemoteServe, Serve, Tensor, batch
    >>> @batch
    ... def double(x):
    ...     return {"y": 2 * x}
    >>> with Serve(http_port=0, grpc_port=None, metrics_port=None) as server:
    ...     _ = server.run()
    ...     with RemoteServe(server.http_url) as remote:
    ...         remote.bind("double", double, [Tensor("x", np.float32, (-1,))], [Tensor("y", np.float32, (-1,))])
    ...         server.is_ready()
    True
    """

    def __init__(self, url: str, *, timeout_s: float = 30.0) -> None:
        problems = []
        if not isinstance(url, str) or not url.strip():
            problems.append(f"url must be the server's address, e.g. 'localhost:8000', got {url!r}")
        if not (isinstance(timeout_s, (int, float)) and not isinstance(timeout_s, bool) and 0 < timeout_s < math.inf):
            problems.append(f"timeout_s must be a number of seconds > 0, got {timeout_s!r}")
        if problems:
            raise ConfigurationError.collect("RemoteServe", problems)
        self.url, self.timeout_s = url, float(timeout_s)
        self._id = f"remote{os.getpid()}x{secrets.token_hex(4)}"  # its workers' identities start with it
        self._owner = new_owner()  # its segments' names
        self._state = _State.NEW
        self._why_closed = "this RemoteServe was closed; create a new one"
        self._bindings: dict[tuple[str, int], _Binding] = {}
        self._lock = threading.RLock()
        self._finished = threading.Event()  # closed, or the server went away: `serve` returns
        self._record: ServerRecord | None = None
        self._server: _Watch | None = None
        self._lines: _Lines | None = None
        self._context: zmq.Context[Any] | None = None
        self._supervisor: Supervisor | None = None
        self._lifeline: tuple[int, int] | None = None
        self._closing = threading.Event()  # set: the watcher thread stops
        self._restoring: set[int] = set()  # fronts restarted that still lack this process's models
        self._watcher: threading.Thread | None = None

    # -- connecting ------------------------------------------------------------------------------------------

    def connect(self) -> RemoteServe:
        """Find the server and attach to it, then load the models bound so far. Raises `StartupError` when no
        server of this user on this host serves the URL's port within ``timeout_s``, when the server refuses,
        or when a model cannot start (nothing stays loaded then); `ConfigurationError` for a URL of another
        host."""
        with self._lock:
            if self._state is _State.CONNECTED:
                return self
            if self._state is _State.CLOSED:
                raise StartupError(self._why_closed)
            record = find_server(self.url, self.timeout_s)
            try:
                self._attach(record)
            except BaseException:
                self._detach_quietly()
                self._release()
                raise
            self._state = _State.CONNECTED
            atexit.register(self.close)
        return self

    def _attach(self, record: ServerRecord) -> None:
        self._record, self._server = record, _Watch(record.pid, record.started)
        self._lifeline = os.pipe()
        self._context = zmq.Context()
        self._lines = _Lines(self._context, record.fronts)
        self._supervisor = Supervisor.create(
            record.fronts,
            self._owner,
            self._lifeline,
            self._context,
            self._worker_gone,
            record.idle_release_s,
            self._id,
        )
        for index in range(len(self._lines)):
            try:
                self._lines.attach(index, self.timeout_s, **self._attach_fields())
            except StartupError as exc:
                raise StartupError(f"the server at {self.url!r} did not take this RemoteServe: {exc}") from None
        loaded: list[tuple[str, int]] = []
        try:
            for key, binding in self._bindings.items():
                loaded.append(key)
                self._load(binding)
        except BaseException:
            self._unload_quietly(loaded)
            raise
        self._watcher = threading.Thread(target=self._watch, name="pybind_serve-remote", daemon=True)
        self._watcher.start()

    def _attach_fields(self) -> dict[str, Any]:
        return {"id": self._id, "pid": os.getpid(), "started": process_start_time(os.getpid()), "owner": self._owner}

    # -- binding ---------------------------------------------------------------------------------------------

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
        """Serve ``fn`` as model ``name`` in the server, as `Serve.bind` does (the same arguments and checks); the
        function runs in this process. Connected, it returns once the model is ready (`StartupError` if it cannot
        start; it is not bound then). A model of the same name and version in the server is replaced."""
        spec = _spec(name, fn, inputs, outputs, config or ModelConfig(), version, strict)
        with self._lock:
            if self._state is _State.CLOSED:
                raise StartupError(self._why_closed)
            if self._server_stopped():
                raise StartupError(f"the server at {self.url!r} is stopping")
            self._bindings[(name, version)] = binding = _Binding(spec, fn)
            if self._state is _State.CONNECTED:
                try:
                    self._load(binding)
                except BaseException:
                    del self._bindings[(name, version)]
                    self._unload_quietly([(name, version)])
                    raise

    def unbind(self, name: str, version: int | None = None) -> None:
        """Unload a model bound here (every version of it unless ``version`` is given), letting its requests in
        flight finish."""
        with self._lock:
            if self._state is _State.CLOSED:
                raise StartupError(self._why_closed)
            keys = [k for k in self._bindings if k[0] == name and version in (None, k[1])]
            if not keys:
                raise ConfigurationError(f"no model {name!r}{'' if version is None else f' v{version}'} is bound here")
            for key in keys:
                del self._bindings[key]
                if self._state is _State.CONNECTED:
                    self._unload(*key)

    def _load(self, binding: _Binding) -> None:
        """As `Serve._load`, but the front records that this process owns the model."""
        assert self._supervisor is not None and self._lines is not None
        spec = binding.spec
        old = self._supervisor.group(spec.name, spec.version)
        try:
            self._lines.call("load", self.timeout_s, spec=spec.to_wire(), remote=self._id)
        except StartupError as exc:
            raise StartupError(f"the server refused {spec.label}: {exc}") from None
        if old is not None:
            self._supervisor.stop_group(spec.name, spec.version)
        self._supervisor.start(spec, binding.fn)
        try:
            self._lines.call(
                "wait_ready", self.timeout_s + 1, name=spec.name, version=spec.version, wait_s=self.timeout_s
            )
        except StartupError as exc:
            raise StartupError(f"{spec.label} did not become ready: {exc}") from None

    def _unload(self, name: str, version: int) -> None:
        assert self._supervisor is not None and self._lines is not None and self._record is not None
        try:
            self._lines.call("unload", self._record.drain_timeout_s + 5, name=name, version=version, remote=self._id)
        finally:
            self._supervisor.stop_group(name, version)

    def _unload_quietly(self, keys: list[tuple[str, int]]) -> None:
        for key in keys:
            try:
                self._unload(*key)
            except StartupError as exc:  # expected when the server has stopped meanwhile
                level = logging.DEBUG if self._server_stopped() else logging.WARNING
                log.log(level, "could not unload model %r v%d: %s", *key, exc)

    def _server_stopped(self) -> bool:
        """Whether the server was stopped (its record is gone)."""
        return self._record is not None and not os.path.exists(self._record.path)

    def _detach_quietly(self) -> None:
        if self._lines is not None:
            for index in range(len(self._lines)):
                try:
                    self._lines.call_one(index, "detach", 5.0, id=self._id)
                except StartupError as exc:
                    level = logging.DEBUG if self._server_stopped() else logging.WARNING
                    log.log(level, "could not detach from front %d: %s", index, exc)

    def _worker_gone(self, identity: str, why: str) -> None:
        lines = self._lines
        if lines is not None:
            lines.tell("worker_gone", identity=identity, why=why)

    # -- lifecycle -------------------------------------------------------------------------------------------

    def is_connected(self) -> bool:
        """Whether this is attached to a server that runs."""
        return self._state is _State.CONNECTED

    def serve(self) -> None:
        """Connect (if not yet), then block until SIGINT/SIGTERM, `close`, or the server stops; then close."""
        self.connect()
        restore = _catch_signals(self._finished)
        try:
            self._finished.wait()
        finally:
            restore()
            self.close()

    def close(self) -> None:
        """Unload every model bound here (requests in flight finish first), stop their workers, and detach; the
        server and its other models go on. Idempotent."""
        with self._lock:
            if self._state is _State.CLOSED:
                return
            connected, self._state = self._state is _State.CONNECTED, _State.CLOSED
            atexit.unregister(self.close)
            self._closing.set()
            if connected:
                self._unload_quietly(list(self._bindings))
                self._detach_quietly()
            self._release()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join()
        self._finished.set()

    stop = close

    def __enter__(self) -> RemoteServe:
        return self.connect()

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<RemoteServe {self._state.value} to {self.url}, models {sorted(n for n, _ in self._bindings)}>"

    # -- watching the server ---------------------------------------------------------------------------------

    def _watch(self) -> None:
        """Until closed: notice the server going away (then close), and fronts restarted (then load them again)."""
        while not self._closing.wait(WATCH_INTERVAL_S):
            if not self._locked():
                return
            try:
                lost = self._check()
            finally:
                self._lock.release()
            if lost:
                self._finished.set()
                return

    def _locked(self) -> bool:
        """Take the lock (a `bind` may hold it a while) unless this is closed meanwhile."""
        while not self._lock.acquire(timeout=0.1):
            if self._closing.is_set():
                return False
        if self._closing.is_set():
            self._lock.release()
            return False
        return True

    def _check(self) -> bool:
        """Whether the server is gone (then this is closed now); fronts restarted get this process's models."""
        assert self._record is not None and self._server is not None and self._lines is not None
        stopped = self._server_stopped()  # `Serve.stop` removes the record first, then drains
        if self._server.ended():
            why = f"its process (pid {self._record.pid}) ended"
        elif stopped and not any(self._lines.alive(i) for i in range(len(self._lines))):
            why = "it was stopped"
        else:
            for index in range(len(self._lines)):
                if not stopped and (index in self._restoring or not self._lines.alive(index)):
                    self._reattach(index)
            return False
        models = ", ".join(sorted(f"{n} v{v}" for n, v in self._bindings)) or "none"
        log.warning("the server at %s is gone (%s): the models bound here (%s) are not served", self.url, why, models)
        self._state, self._why_closed = _State.CLOSED, f"the server at {self.url!r} is gone ({why}): create a new one"
        self._closing.set()
        atexit.unregister(self.close)
        self._release()
        return True

    def _reattach(self, index: int) -> None:
        """Front ``index`` ended: once the one restarted in its place answers, give it the models and workers (tried
        again at the next look until that succeeds)."""
        assert self._lines is not None and self._supervisor is not None
        try:
            if self._lines.attach(index, REATTACH_TIMEOUT_S, **self._attach_fields()):
                self._restoring.add(index)  # a new front process
            if index not in self._restoring:
                return
            for binding in self._bindings.values():
                self._lines.call_one(index, "load", self.timeout_s, spec=binding.spec.to_wire(), remote=self._id)
            identities = self._supervisor.identities()
            self._lines.call_one(index, "adopt", 11.0, identities=identities, wait_s=10.0, regions=False)
            self._restoring.discard(index)
            log.warning("front %d of the server at %s was restarted; the models bound here are back", index, self.url)
        except StartupError as exc:
            log.debug("front %d is not back yet: %s", index, exc)

    def _release(self) -> None:
        """Stop the workers, close the lines to the fronts, remove this process's segments; idempotent."""
        if self._supervisor is not None:
            self._supervisor.close()
        if self._lines is not None:
            self._lines.close()
        if self._context is not None:
            self._context.term()
        if self._lifeline is not None:
            for fd in self._lifeline:
                os.close(fd)
        if self._server is not None:
            self._server.close()
        self._supervisor = self._lines = self._context = self._lifeline = self._server = None
        remove_segments_of(self._owner)


def _catch_signals(finished: threading.Event) -> Callable[[], None]:
    """Have SIGINT and SIGTERM set ``finished`` (in the main thread only; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    handlers = {sig: signal.signal(sig, lambda *_: finished.set()) for sig in (signal.SIGINT, signal.SIGTERM)}

    def restore() -> None:
        for sig, old in handlers.items():
            signal.signal(sig, old)

    return restore
