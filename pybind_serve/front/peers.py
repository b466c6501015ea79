"""A front process's line to the other fronts of its server (`Serve(fronts=N)`).

Every front batches and answers its own connections, so what a client must see as one server is kept so
through this: a shared-memory region registered through one front is registered on all of them before the
client hears back, and `/metrics` and the statistics endpoints answer totals, summing each front's counters.
A front not connected, or not answering, within ``timeout_s`` (it died and is being restarted) is left out of that one
answer; its frames queued meanwhile are dropped, not delivered to its successor.

Frames go to each peer's ROUTER (the one its workers and the owner talk to) over a DEALER of our own; calls are
serialised, each with an id, so a late reply is never taken for the next call's.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from typing import Any

import zmq
import zmq.asyncio

from ..transport.frames import decode, encode

__all__ = ["PEER_TIMEOUT_S", "Peers"]

PEER_TIMEOUT_S = 2.0


class Peers:
    """The other fronts of this server: ``call`` asks each of them and gathers their answers."""

    def __init__(self, context: zmq.asyncio.Context, index: int, endpoints: list[str]) -> None:
        self.index = index
        self._sockets: list[zmq.asyncio.Socket] = []
        for i, endpoint in enumerate(endpoints):
            if i == index:
                continue
            sock = context.socket(zmq.DEALER)
            sock.setsockopt(zmq.IDENTITY, f"peer-{index}-{os.getpid()}".encode())
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.IMMEDIATE, 1)  # nothing queued for a peer that is down: it is left out instead
            sock.connect(endpoint)
            self._sockets.append(sock)
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()

    def __len__(self) -> int:
        return len(self._sockets)

    async def call(self, op: str, timeout_s: float = PEER_TIMEOUT_S, **fields: Any) -> list[dict[str, Any]]:
        """Send ``{"op": op, **fields}`` to every peer; the replies of those that answered in time."""
        if not self._sockets:
            return []
        async with self._lock:
            call_id = next(self._ids)
            data = encode({"op": op, "call": call_id, **fields})
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout_s
            asked = []
            for sock in self._sockets:
                while True:
                    try:
                        await sock.send(data, flags=zmq.NOBLOCK)
                    except zmq.Again:  # not connected: just started, restarting or down; it has until the deadline
                        if loop.time() < deadline:
                            await asyncio.sleep(0.02)
                            continue
                        break
                    asked.append(sock)
                    break
            replies = []
            for sock in asked:
                while (left := deadline - loop.time()) > 0:
                    if not await sock.poll(int(left * 1000) + 1):
                        break
                    reply = decode(await sock.recv())
                    if reply.get("call") == call_id:
                        replies.append(reply)
                        break
            return replies

    def close(self) -> None:
        for sock in self._sockets:
            sock.close(linger=0)
