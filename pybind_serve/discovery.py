"""How a `RemoteServe` finds a running server of this host from its URL: the record each server publishes.

A running `Serve` writes a small JSON record, ``<tempdir>/pybind_serve_<pid>_<hex>.json``, beside its ZeroMQ
socket files and readable by its user only (mode 0600): its process (pid and start time), its ports, and its
fronts' control endpoints, or that it refuses remote binding (``Serve(allow_remote=False)``). `Serve.stop`
removes it first; the record of a server whose process was killed is removed by its fronts as they exit, and is
skipped meanwhile (its process is gone); one left anyway goes with the stale socket files when the next server
starts (`transport.channel.remove_stale_endpoints`). A record is trusted only
when this user owns it and nobody else may read or write it: only the same user on the same host can attach
models to a server.

>>> record = ServerRecord(pid=os.getpid(), started=process_start_time(os.getpid()) or 0, owner="1_ab",
...                       host="127.0.0.1", http_port=8000, grpc_port=8001, allow_remote=True,
...                       fronts=("ipc:///tmp/f.sock",), drain_timeout_s=30.0, idle_release_s=10.0)
>>> ServerRecord.from_json(record.to_json()) == record, record.serves(8001), record.alive()
(True, True, True)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import stat
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ConfigurationError, StartupError
from .linux import process_start_time

__all__ = ["ServerRecord", "find_server", "is_local_host", "publish", "record_path", "records", "withdraw"]

FORMAT = 1  # of the record; a record of another format is not read
_RECORD_FILE = re.compile(r"^pybind_serve_\d+_[0-9a-f]{12}\.json$")


@dataclass(frozen=True)
class ServerRecord:
    """What a running server tells the `RemoteServe` processes of its host."""

    pid: int  # the process that made the `Serve`
    started: int  # its start time (`linux.process_start_time`): a pid reused later is not taken for it
    owner: str  # the server's shared-memory owner name
    host: str
    http_port: int
    grpc_port: int | None
    allow_remote: bool
    fronts: tuple[str, ...]  # every front's control endpoint (none listed when remote binding is refused)
    drain_timeout_s: float
    idle_release_s: float
    path: str = field(default="", compare=False)  # where it was read from

    def serves(self, port: int) -> bool:
        """Whether ``port`` is this server's HTTP or gRPC port."""
        return port in (self.http_port, self.grpc_port)

    def alive(self) -> bool:
        """Whether the server's process still runs."""
        return process_start_time(self.pid) == self.started

    def to_json(self) -> str:
        fields = asdict(self)
        del fields["path"]
        return json.dumps({"format": FORMAT, **fields, "fronts": list(self.fronts)})

    @classmethod
    def from_json(cls, text: str, path: str = "") -> ServerRecord:
        """The record in ``text``; `ValueError` if it is not one (of this format)."""
        data: Any = json.loads(text)
        if not isinstance(data, dict) or data.pop("format", None) != FORMAT:
            raise ValueError("not a server record of this format")
        try:
            return cls(**{**data, "fronts": tuple(data["fronts"]), "path": path})
        except (TypeError, KeyError) as exc:
            raise ValueError(f"not a server record: {exc}") from None


def record_path(directory: str | None = None) -> str:
    """A fresh path for this process's server record, where `RemoteServe` looks (`publish` writes it)."""
    directory = directory or tempfile.gettempdir()
    return os.path.join(directory, f"pybind_serve_{os.getpid()}_{uuid.uuid4().hex[:12]}.json")


def publish(record: ServerRecord, path: str) -> None:
    """Write ``record`` at ``path`` (from `record_path`), readable by this user only; `withdraw` removes it."""
    partial = f"{path}.partial"  # renamed once whole: a reader never sees half a record
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(record.to_json())
    os.replace(partial, path)


def withdraw(path: str) -> None:
    """Remove a record `publish` wrote; idempotent."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def records(directory: str | None = None) -> list[ServerRecord]:
    """The records of the live servers of this user (those of other users, or that others could change, are
    ignored)."""
    directory = directory or tempfile.gettempdir()
    found = []
    for name in os.listdir(directory):
        if not _RECORD_FILE.match(name):
            continue
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:  # removed meanwhile, a link, or not ours to read
            continue
        with os.fdopen(fd) as file:
            info = os.fstat(fd)
            if info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077 or not stat.S_ISREG(info.st_mode):
                continue
            try:
                record = ServerRecord.from_json(file.read(), path)
            except ValueError:
                continue
        if record.alive():
            found.append(record)
    return found


def is_local_host(host: str) -> bool:
    """Whether ``host`` names an address of this machine (one a socket here can bind)."""
    try:
        addresses = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return False
    for family, _, _, _, address in addresses:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((address[0], 0))
            except OSError:
                continue
            return True
    return False


def find_server(url: str, timeout_s: float = 0.0, directory: str | None = None) -> ServerRecord:
    """The record of the server of this host that serves ``url``'s port (HTTP or gRPC), waiting up to
    ``timeout_s`` for one to start.

    `ConfigurationError` for a URL that is not one of this host; `StartupError` when no server of this user
    serves that port, or when the one that does refuses remote binding.
    """
    from .client.url import parse_url  # the clients' one URL form; imported here, as it loads the client package

    endpoint = parse_url(url)
    if not is_local_host(endpoint.host):
        raise ConfigurationError(
            f"RemoteServe binds models only into a server of this host, and {endpoint.host!r} (of {url!r}) is not "
            "one of its addresses: run it on the server's host (e.g. with url='localhost:8000')"
        )
    deadline = time.monotonic() + timeout_s
    while not (matches := [r for r in records(directory) if r.serves(endpoint.port)]):
        if time.monotonic() >= deadline:
            raise StartupError(
                f"no pybind_serve server of this user on this host serves port {endpoint.port} ({url!r}); start "
                f"one with Serve(...).run(), in a process whose temporary directory is "
                f"{directory or tempfile.gettempdir()}"
            )
        time.sleep(0.1)
    matches.sort(key=lambda r: r.host != endpoint.host)  # servers on one port and other addresses: the one named
    record = matches[0]
    if not record.allow_remote:
        raise StartupError(
            f"the server at {url!r} (pid {record.pid}) refuses remote binding: it was started with "
            "Serve(allow_remote=False)"
        )
    return record
