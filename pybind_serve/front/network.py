"""The front's second ROUTER, on a TCP endpoint, for workers on other hosts (a cluster backend's workers).

Beside its ipc ROUTER, a front of a server with a cluster backend (`pybind_serve.cluster`) binds one on
``tcp://<host>:<port>``. Workers connect to it when they do not share this host's /dev/shm; their batches and
answers carry the tensor bytes as further message parts (`transport.inline`) instead of shared-memory blocks.
Only workers' frames are taken here (`transport.network.WORKER_OPS`): a peer on the network cannot load, unload
or stop anything. With a secret key the ROUTER is a CurveZMQ server (authenticated and encrypted).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import zmq
import zmq.asyncio

from ..transport.network import WORKER_OPS, parse_parts, secure_server, to_parts

__all__ = ["NetworkPort"]

log = logging.getLogger("pybind_serve.front")

Handler = Callable[[bytes, dict[str, Any]], None]


class NetworkPort:
    """The TCP ROUTER and the workers that said hello on it (their frames are sent through it)."""

    def __init__(self, context: zmq.asyncio.Context, endpoint: str, secret: str | None) -> None:
        self.socket = context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        if secret is not None:
            secure_server(self.socket, secret)
        self.socket.bind(endpoint)  # a port of 0: any free one; a restarted front binds its predecessor's
        self.endpoint: str = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.workers: set[bytes] = set()

    def send(self, identity: bytes, frame: dict[str, Any]) -> None:
        # A ROUTER never blocks a send (unroutable frames are dropped): no need to await the future.
        self.socket.send_multipart([identity, *to_parts(frame)], copy=False)

    async def receive(self, hello: Handler, route: Handler) -> None:
        """Take the workers' frames until cancelled, then close the socket: ``hello`` for a worker's hello (it is
        a network worker from then on), ``route`` for its other frames."""
        try:
            while True:
                parts = await self.socket.recv_multipart(copy=False)
                identity = parts[0].bytes
                try:
                    frame = parse_parts(parts[1:])
                    op = frame.get("op")
                    if op not in WORKER_OPS:
                        log.warning(
                            "dropped a %r frame from %r on the network port: only workers' frames go there",
                            op,
                            identity,
                        )
                    elif op == "hello":
                        self.workers.add(identity)
                        hello(identity, frame)
                    else:
                        route(identity, frame)
                except Exception:
                    log.exception("could not handle a frame from %r on the network port", identity)
        finally:
            self.socket.close(linger=0)
