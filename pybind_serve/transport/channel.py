"""ZeroMQ channels: each front process binds one ROUTER; workers and the owning `Serve` connect a DEALER to each.

Only small JSON frames (`frames`) travel here. The control client is synchronous (the owner calls it from
``bind`` / ``stop``); each call carries an id so a late reply to a call that timed out is never taken for
the answer to the next one.
"""

from __future__ import annotations

import itertools
import os
import re
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import zmq

from ..errors import StartupError
from .frames import decode, encode
from .network import NetworkKeys, parse_parts, secure_client, to_parts
from .shm import process_alive

__all__ = ["ControlClient", "Empty", "WorkerChannel", "new_endpoint", "remove_stale_endpoints"]


class Empty(Exception):
    """`WorkerChannel.receive` with a timeout: no frame came in time."""


def new_endpoint(owner_pid: int) -> str:
    """A fresh ipc endpoint for one server's ROUTER (a socket file in the temp dir)."""
    return f"ipc://{tempfile.gettempdir()}/pybind_serve_{owner_pid}_{uuid.uuid4().hex[:12]}.sock"


def endpoint_path(endpoint: str) -> str:
    return endpoint.removeprefix("ipc://")


# A server's socket files, and its record for `RemoteServe` (`discovery`): all named after the owner's pid.
_SOCKET_FILE = re.compile(r"^pybind_serve_(\d+)_[0-9a-f]{12}\.(?:sock|json)$")


def remove_stale_endpoints(directory: str | None = None) -> list[str]:
    """Remove the socket files (and discovery records) of servers whose owner process is dead (killed before it
    could clean up)."""
    directory = directory or tempfile.gettempdir()
    removed = []
    for name in os.listdir(directory):
        match = _SOCKET_FILE.match(name)
        if match and not process_alive(int(match.group(1))):
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:  # another server swept it first
                continue
            removed.append(name)
    return removed


class WorkerChannel:
    """A worker's DEALERs, one connected to each front process: blocking send/receive of frames, woken early
    when ``stop_fd`` becomes readable.

    Every frame received carries ``"front"``: the index of the front it came from, which is where its answers
    go (`send`). A frame taken out of turn (a batch of another front, while one streams) can be put back with
    `defer`; `receive` hands deferred frames out first, in order.

    ``inline``: which fronts are on another host (one flag for all, or one per endpoint): their endpoints are
    ``tcp://`` ones, and tensor bytes travel in the messages themselves (`inline`): a frame's ``buffers`` are sent
    as further parts, and received ones come as ``frame["buffers"]``. ``curve``: the fronts' CurveZMQ public key and
    this worker's key pair (`network`), for the sockets of those fronts.
    """

    def __init__(
        self,
        context: zmq.Context[Any],
        endpoints: Sequence[str],
        identity: str,
        stop_fd: int,
        *,
        inline: bool | Sequence[bool] = False,
        curve: tuple[str, NetworkKeys] | None = None,
    ) -> None:
        self.inline_fronts = [inline] * len(endpoints) if isinstance(inline, bool) else list(inline)
        if len(self.inline_fronts) != len(endpoints):
            raise ValueError(f"{len(endpoints)} endpoints but {len(self.inline_fronts)} inline flags")
        self.sockets: list[zmq.Socket[Any]] = []
        for endpoint, remote in zip(endpoints, self.inline_fronts, strict=True):
            sock = context.socket(zmq.DEALER)
            sock.setsockopt(zmq.IDENTITY, identity.encode())
            sock.setsockopt(zmq.LINGER, 0)
            if curve is not None and remote:
                secure_client(sock, *curve)
            sock.connect(endpoint)
            self.sockets.append(sock)
        self.stop_fd = stop_fd
        self._deferred: deque[dict[str, Any]] = deque()
        self._poller = zmq.Poller()
        for sock in self.sockets:
            self._poller.register(sock, zmq.POLLIN)
        self._poller.register(stop_fd, zmq.POLLIN)

    @property
    def inline(self) -> bool:
        """Whether every front is on another host (then this worker needs no shared memory of its own)."""
        return all(self.inline_fronts)

    @property
    def fronts(self) -> int:
        return len(self.sockets)

    def send(self, frame: dict[str, Any], front: int = 0) -> None:
        if self.inline_fronts[front]:
            self.sockets[front].send_multipart(to_parts(frame), copy=False)
        else:
            self.sockets[front].send(encode(frame), copy=False)

    def broadcast(self, frame: dict[str, Any]) -> None:
        """Send ``frame`` to every front."""
        data = encode(frame)
        for sock in self.sockets:
            sock.send(data)

    def defer(self, frame: dict[str, Any]) -> None:
        self._deferred.append(frame)

    def receive(self, timeout_ms: int | None = None) -> dict[str, Any] | None:
        """The next frame, or None once ``stop_fd`` is readable (stop asked, or the owner died).

        With ``timeout_ms`` (0: only what has arrived already), `Empty` when no frame came in time.
        """
        if self._deferred:
            return self._deferred.popleft()
        while True:
            events = dict(self._poller.poll(timeout_ms))
            for front, sock in enumerate(self.sockets):
                if sock in events:
                    inline = self.inline_fronts[front]
                    frame = parse_parts(sock.recv_multipart(copy=False)) if inline else decode(sock.recv())
                    frame["front"] = front
                    return frame
            if events:
                return None
            if timeout_ms is not None:
                raise Empty

    def close(self, linger_ms: int = 0) -> None:
        """Close the sockets; frames not yet sent are dropped unless ``linger_ms`` gives them that long."""
        for sock in self.sockets:
            if not sock.closed:
                sock.close(linger=linger_ms)


class ControlClient:
    """The owner's line to the front: ``call(op, ...)`` waits for the front's answer."""

    def __init__(self, context: zmq.Context[Any], endpoint: str) -> None:
        self._socket = context.socket(zmq.DEALER)
        # Unique: a `RemoteServe` may call the same front from the owner's own process.
        self._socket.setsockopt(zmq.IDENTITY, f"control-{os.getpid()}-{uuid.uuid4().hex[:8]}".encode())
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.connect(endpoint)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def call(
        self, op: str, timeout_s: float, alive: Callable[[], bool] = lambda: True, **fields: Any
    ) -> dict[str, Any]:
        """Send ``{"op": op, **fields}`` and return the reply.

        Raises `StartupError` when none comes within ``timeout_s`` or ``alive()`` turns false (the front died).
        """
        with self._lock:
            call_id = next(self._ids)
            self._socket.send(encode({"op": op, "call": call_id, **fields}))
            deadline = time.monotonic() + timeout_s
            while (left := deadline - time.monotonic()) > 0:
                # Short slices only so that a front that died is noticed at once, not at the deadline.
                if not self._socket.poll(min(int(left * 1000) + 1, 50)):
                    if not alive():
                        raise StartupError(f"the front process exited while handling {op!r}; see its log above")
                    continue
                reply = decode(self._socket.recv())
                if reply.get("call") == call_id:
                    return reply
        raise StartupError(f"the front process did not answer {op!r} within {timeout_s:g} s")

    def close(self) -> None:
        self._socket.close(linger=0)
