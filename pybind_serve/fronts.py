"""The front processes of one `Serve`: listening sockets, starting, calling, watching, restarting, stopping.

With ``Serve(fronts=N)`` there are N front processes, each a whole KServe v2 server (HTTP, gRPC, batching) over
the same workers: they share the HTTP port through N listening sockets bound with ``SO_REUSEPORT`` (the kernel
spreads connections over them) and the gRPC port the same way, while the metrics port belongs to front 0, which
answers totals (`front.peers`). The owner binds the HTTP and metrics sockets and keeps its copies until `close`,
so a front that died is restarted on the same sockets and endpoint (`watch`): connections that arrive
meanwhile wait in its backlog, the workers reconnect to it by themselves, and ``on_restart`` loads the models
into it again. One front (the default) works exactly the same, with plain sockets.

A cluster backend may add front replicas that run on other hosts (`add_remote`: each a `RemoteFront`, indexed after
this host's fronts): the calls to every front reach them too, and one that its host restarted is loaded again
through ``on_restart`` as well; one lost with its host is left out from then on.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Protocol

import zmq

from .errors import PortInUseError, StartupError
from .transport.channel import ControlClient, endpoint_path, new_endpoint
from .transport.network import SECRET_ENV, FrontNetwork
from .transport.shm import front_tag, remove_segments_of

__all__ = ["Fronts", "RemoteFront"]

log = logging.getLogger("pybind_serve")

RESTART_INTERVAL_S = 1.0  # at most one restart of a front per this long, should it keep dying


class RemoteFront(Protocol):
    """A front replica that another host runs (a cluster backend's): what `Fronts` asks of it."""

    lost: bool  # gone for good (with its host): left out of the calls to every front

    def call(self, op: str, timeout_s: float, **fields: Any) -> dict[str, Any]:
        """Its reply to a control call; `StartupError` if none comes."""
        ...

    def alive(self) -> bool: ...

    def take_restart(self) -> bool:
        """Whether its host restarted it since the last time this was asked (then the models are loaded again)."""
        ...


class Fronts:
    """N front processes. ``options`` is what every front gets on its command line (`FrontOptions` fields other
    than the sockets, the endpoints and the gRPC port)."""

    def __init__(
        self,
        count: int,
        host: str,
        ports: dict[str, int | None],
        options: dict[str, Any],
        lifeline_fd: int,
        context: zmq.Context[Any],
        startup_timeout_s: float,
        stop_timeout_s: float,
        network: FrontNetwork | None = None,
    ) -> None:
        self.count, self.host, self.ports = count, host, dict(ports)
        self._options, self._lifeline_fd, self._context = options, lifeline_fd, context
        self._startup_timeout_s, self._stop_timeout_s = startup_timeout_s, stop_timeout_s
        self.endpoints = [new_endpoint(os.getpid()) for _ in range(count)]
        self._sockets: list[dict[str, socket.socket]] = []
        self._processes: list[subprocess.Popen[bytes] | None] = [None] * count
        self._controls: list[ControlClient] = []
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        self.network = network  # a cluster backend's workers connect to each front over TCP too (None: not)
        self.network_endpoints: list[str | None] = [None] * count  # known once each front has answered
        self.remote: list[RemoteFront] = []  # front replicas on other hosts, indexed from ``count`` on
        self._close_remote: Callable[[], None] | None = None

    def add_remote(self, fronts: Sequence[RemoteFront], close: Callable[[], None]) -> None:
        """Front replicas that other hosts run (indexed after this host's fronts, in this order); ``close`` stops
        them all (`close` calls it while this host's fronts drain)."""
        self.remote.extend(fronts)
        self._close_remote = close

    # -- starting ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Bind the ports, start every front and wait for each to answer (`StartupError`, `PortInUseError`)."""
        shared = self.count > 1
        for kind in ("http", "grpc") if shared else ():  # every front shares them: nothing else may have them
            if port := self.ports[kind]:
                _listen(self.host, port, kind, reuse_port=False).close()  # PortInUseError if taken
        for index in range(self.count):
            kinds = ("http", "metrics", "vertex") if index == 0 else ("http",)
            wanted = {kind: self.ports.get(kind) for kind in kinds}
            sockets = _listen_all(self.host, wanted, reuse_port=shared)
            self._sockets.append(sockets)
            self.ports.update({kind: sock.getsockname()[1] for kind, sock in sockets.items()})
        if not shared and (port := self.ports["grpc"]):  # the front binds it, and grpc would log its own line on
            _listen(self.host, port, "grpc", reuse_port=False).close()  # stderr before our error: look here first
        for index in range(self.count):
            self._controls.append(ControlClient(self._context, self.endpoints[index]))
            self._processes[index] = self._spawn(index)
            reply = self._ping(index)
            if index == 0:
                self.ports["grpc"] = _grpc_port(reply)

    def _spawn(self, index: int) -> subprocess.Popen[bytes]:
        sockets = self._sockets[index]
        options = {
            **self._options,
            "endpoint": self.endpoints[index],
            "host": self.host,
            "http_fd": sockets["http"].fileno(),
            "metrics_fd": sockets["metrics"].fileno() if "metrics" in sockets else None,
            "vertex_fd": sockets["vertex"].fileno() if "vertex" in sockets else None,
            "grpc_port": self.ports["grpc"],
            "grpc_reuse_port": self.count > 1,
            "lifeline_fd": self._lifeline_fd,
            "index": index,
            "peers": self.endpoints if self.count > 1 else [],
            # a restarted front binds its predecessor's TCP endpoint, to which the workers reconnect by themselves
            "network_endpoint": self.network and (self.network_endpoints[index] or self.network.endpoint()),
        }
        fds = [s.fileno() for s in sockets.values()] + [self._lifeline_fd]
        command = [sys.executable, "-m", "pybind_serve.front.process", json.dumps(options)]
        env = None
        if self.network is not None and self.network.keys is not None:  # never on the command line: ps shows it
            env = {**os.environ, SECRET_ENV: self.network.keys.secret}
        # A session of its own: a signal to the owner's process group (Jupyter's kernel restart sends SIGTERM
        # there) must not stop the front before its lifeline tells it the owner is gone, so that it cleans up.
        return subprocess.Popen(command, pass_fds=fds, stdin=subprocess.DEVNULL, start_new_session=True, env=env)

    def _ping(self, index: int) -> dict[str, Any]:
        try:
            reply = self._controls[index].call("ping", self._startup_timeout_s, alive=partial(self.alive, index))
        except StartupError as exc:
            process = self._processes[index]
            code = process.poll() if process is not None else None
            raise StartupError(f"{exc} (front exit code {code}); its stderr is above") from None
        if self.network is not None:
            self.network_endpoints[index] = reply["network_endpoint"]
        return reply

    # -- calling ----------------------------------------------------------------------------------------------

    def alive(self, index: int) -> bool:
        if index >= self.count:
            return self.remote[index - self.count].alive()
        process = self._processes[index]
        return process is not None and process.poll() is None

    def call(self, op: str, timeout_s: float, **fields: Any) -> list[dict[str, Any]]:
        """Ask every front (one after the other; front replicas of other hosts lost with them are left out); their
        replies. `StartupError` if one refuses or is gone."""
        indexes = [*range(len(self._controls)), *(self.count + i for i, r in enumerate(self.remote) if not r.lost)]
        return [self.call_one(index, op, timeout_s, **fields) for index in indexes]

    def call_one(self, index: int, op: str, timeout_s: float, **fields: Any) -> dict[str, Any]:
        """Ask front ``index``; its reply. `StartupError` if it refuses or is gone."""
        if index >= self.count:
            reply = self.remote[index - self.count].call(op, timeout_s, **fields)
        else:
            reply = self._controls[index].call(op, timeout_s, alive=partial(self.alive, index), **fields)
        if not reply.get("ok"):
            raise StartupError(reply.get("error", f"the front refused {op!r}"))
        return reply

    def tell(self, op: str, **fields: Any) -> None:
        """Tell every live front, not minding those that are gone or do not answer within 5 s."""
        for index in range(len(self._controls) + len(self.remote)):
            if self.alive(index):
                try:
                    self.call_one(index, op, 5.0, **fields)
                except StartupError:
                    log.warning("front %d did not take %r", index, op)

    def ready(self) -> bool:
        """Whether every front is up and says every model is ready."""
        try:
            local = all(self.alive(i) for i in range(self.count))
            return local and all(reply.get("ready") for reply in self.call("status", 5.0))
        except StartupError:
            return False

    # -- watching ---------------------------------------------------------------------------------------------

    def watch(self, on_restart: Callable[[int], None]) -> None:
        """Restart any front that exits while the server runs; ``on_restart(index)`` loads it again."""
        self._watcher = threading.Thread(
            target=self._watch, args=(on_restart,), name="pybind_serve-fronts", daemon=True
        )
        self._watcher.start()

    def _watch(self, on_restart: Callable[[int], None]) -> None:
        last_restart = [0.0] * self.count
        while not self._stopping.wait(0.1):
            for offset, remote in enumerate(self.remote):
                if remote.take_restart() and not self._stopping.is_set():
                    try:
                        on_restart(self.count + offset)
                    except Exception:
                        log.exception("front replica %d could not be loaded again", self.count + offset)
            for index in range(self.count):
                process = self._processes[index]
                if process is None or process.poll() is None or self._stopping.is_set():
                    continue
                if time.monotonic() - last_restart[index] < RESTART_INTERVAL_S:
                    continue
                last_restart[index] = time.monotonic()
                log.error("front process %d (pid %d) exited with %s; restarting it", index, process.pid, process.poll())
                remove_segments_of(self._options["owner"], front_tag(index, process.pid))
                try:
                    self._processes[index] = self._spawn(index)
                    self._ping(index)
                    on_restart(index)
                except Exception:
                    log.exception("front process %d could not be restarted", index)

    # -- stopping ---------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every front (they drain in parallel), then release the sockets and endpoints; idempotent."""
        self._stopping.set()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join()
        remote = threading.Thread(target=self._close_remote, daemon=True) if self._close_remote else None
        if remote is not None:  # they drain beside ours
            remote.start()
        running = [p for p in self._processes if p is not None and p.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._stop_timeout_s
        for process in running:
            try:
                process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                log.error("a front process did not stop within %g s; killing it", self._stop_timeout_s)
                process.kill()
                process.wait()
        if remote is not None:
            remote.join()
        for control in self._controls:
            control.close()
        for sockets in self._sockets:
            for sock in sockets.values():
                sock.close()
        self._controls, self._sockets = [], []
        for endpoint in self.endpoints:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(endpoint_path(endpoint))

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes if p is not None]


def _grpc_port(reply: dict[str, Any]) -> int | None:
    """The port the front's gRPC server listens on (None: off), from its answer to ``ping``."""
    error = reply.get("grpc_error")
    if error:
        raise (PortInUseError if error["type"] == "PortInUseError" else StartupError)(error["message"])
    port = reply.get("grpc_port")
    return None if port is None else int(port)


def _listen_all(host: str, ports: dict[str, int | None], reuse_port: bool) -> dict[str, socket.socket]:
    """A listening socket per port asked for; if one cannot be had, those already bound are closed."""
    sockets: dict[str, socket.socket] = {}
    try:
        for kind, port in ports.items():
            if port is not None:
                sockets[kind] = _listen(host, port, kind, reuse_port and kind == "http")
    except BaseException:
        for sock in sockets.values():
            sock.close()
        raise
    return sockets


def _listen(host: str, port: int, kind: str, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError.of(kind, host, port) from None
        raise StartupError(f"cannot listen on {host}:{port} for {kind}: {exc}") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
