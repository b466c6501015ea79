"""The network transport between fronts and workers on other hosts: TCP endpoints, CurveZMQ keys, and frames
whose tensor bytes follow the JSON as further message parts (`inline`).

A front of a server with a cluster backend binds a second ROUTER on ``tcp://<host>:<port>``, beside its ipc one.
Only workers' frames are taken there (hello, failed, and the answers to batches): control calls come over ipc
only, from this host. With keys (the default), the ROUTER is a CurveZMQ server: a peer must know the server's
public key to connect at all (it is handed to the workers through the cluster's own channel, never published),
and every byte on the wire is encrypted. The front's secret key reaches it in its environment
(`SECRET_ENV`), never on its command line, which any user of the host may read.

>>> keys = new_keys()
>>> len(keys.public), len(keys.secret)
(40, 40)
>>> frame = parse_parts([b'{"op":"hello"}', b"abc"])
>>> frame["op"], bytes(frame["buffers"][0])
('hello', b'abc')
>>> [bytes(p) for p in to_parts({"op": "x", "buffers": [b"abc"]})]
[b'{"op":"x"}', b'abc']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import zmq

from ..errors import StartupError
from .frames import decode, encode

__all__ = [
    "SECRET_ENV",
    "WORKER_OPS",
    "FrontNetwork",
    "NetworkKeys",
    "new_keys",
    "parse_parts",
    "secure_client",
    "secure_server",
    "to_parts",
]

SECRET_ENV = "PYBIND_SERVE_NETWORK_SECRET"  # the front's CurveZMQ secret key, given in its environment
# What a worker may send over the network ROUTER; anything else from there is dropped.
WORKER_OPS = frozenset({"hello", "failed", "result", "error", "partial", "done", "started"})


@dataclass(frozen=True)
class NetworkKeys:
    """A CurveZMQ key pair, Z85-encoded (40 characters each)."""

    public: str
    secret: str

    def __repr__(self) -> str:  # never print a secret key into a log
        return f"NetworkKeys(public={self.public!r}, secret=...)"


def new_keys() -> NetworkKeys:
    """A fresh key pair; `StartupError` if this libzmq was built without CurveZMQ."""
    if not zmq.has("curve"):
        raise StartupError(
            "this pyzmq's libzmq has no CurveZMQ support, which encrypting the network transport needs; "
            "install a pyzmq wheel (it bundles one with it), or turn encryption off where the network is trusted"
        )
    public, secret = zmq.curve_keypair()
    return NetworkKeys(public.decode(), secret.decode())


def secure_server(sock: zmq.Socket[Any], secret: str) -> None:
    """Make ``sock`` (before it binds) a CurveZMQ server with this secret key."""
    sock.curve_secretkey = secret.encode()
    sock.curve_publickey = zmq.curve_public(secret.encode())
    sock.curve_server = True


def secure_client(sock: zmq.Socket[Any], server_public: str, keys: NetworkKeys) -> None:
    """Make ``sock`` (before it connects) a CurveZMQ client of the server whose public key is ``server_public``."""
    sock.curve_serverkey = server_public.encode()
    sock.curve_publickey = keys.public.encode()
    sock.curve_secretkey = keys.secret.encode()


def to_parts(frame: dict[str, Any]) -> list[Any]:
    """A frame as message parts: its JSON, then its ``buffers`` (tensor bytes) if it has any."""
    buffers = frame.pop("buffers", None)
    return [encode(frame), *buffers] if buffers else [encode(frame)]


def parse_parts(parts: Sequence[Any]) -> dict[str, Any]:
    """A frame from its message parts (`zmq.Frame` or bytes): the JSON, with the further parts as ``buffers``
    (memoryviews, no copy)."""
    first = parts[0]
    frame = decode(first.bytes if isinstance(first, zmq.Frame) else first)
    if len(parts) > 1:
        frame["buffers"] = [p.buffer if isinstance(p, zmq.Frame) else memoryview(p) for p in parts[1:]]
    return frame


@dataclass(frozen=True)
class FrontNetwork:
    """Where the fronts listen for workers on other hosts: an address of the owner's host, as those hosts reach
    it, and the CurveZMQ keys of the fronts (None: not encrypted, for a network where every host is trusted)."""

    host: str
    keys: NetworkKeys | None

    def endpoint(self, port: int = 0) -> str:
        """``tcp://host:port`` (port 0: any free one)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{port}"
