"""`FrontActor`: a front replica on another node of the Ray cluster, run by Ray as an actor pinned to that node.

The actor is a small owner of one front process on its node, as `Serve` is of those on its own host: it binds the
client ports there (HTTP, gRPC, metrics), starts the front process on them (`fronts.Fronts` with one front), holds
its lifeline, and restarts it on the same sockets if it exits. The front listens for workers on its node's address
(``tcp://<node ip>:<port>``, CurveZMQ with the server's keys), so every worker of the cluster reaches it over the
network transport. The owner's control calls (``load``, ``wait_ready``, ``queues``...) reach it through Ray
(`call`), and its front process takes them over its own ipc ROUTER, as on the owner's host.

When the actor's process ends, however it ends (stopped, killed, its owner gone and Ray ending its actors), the
front's lifeline closes and the front stops and removes what it left, as a front whose owner died.

This module is imported by Ray's worker processes (by name: every node needs pybind_serve installed); it imports
nothing of Ray at its top, so that pybind_serve imports without Ray.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from typing import Any

import zmq

from ..fronts import Fronts
from ..transport.network import FrontNetwork, NetworkKeys
from ..transport.shm import new_owner, remove_segments_of

__all__ = ["FrontActor", "FrontPlan"]


@dataclass(frozen=True)
class FrontPlan:
    """What a front replica needs: the front's options (as `Serve` gives its own fronts, less what belongs to the
    owner's host), where to listen, and time limits."""

    options: dict[str, Any]
    host: str  # where clients connect (the `Serve`'s ``host``)
    ports: dict[str, int | None]  # "http", "grpc", "metrics": the same as the owner's, or 0 for any free one
    keys: NetworkKeys | None  # the fronts' CurveZMQ keys (None: the network transport is not encrypted)
    startup_timeout_s: float
    stop_timeout_s: float
    network_endpoint: str | None = None  # a replacement binds its predecessor's (the workers reconnect to it)


class FrontActor:
    """A Ray actor running one front replica on its node: `start`, then `call`, `watch` and `stop`."""

    def __init__(self) -> None:
        self._fronts: Fronts | None = None
        self._lifeline: tuple[int, int] | None = None
        self._context: zmq.Context[Any] | None = None
        self._owner = new_owner()
        self._restarts = 0
        self._stopped = False
        self._changed = threading.Condition()

    def start(self, plan: FrontPlan) -> dict[str, Any]:
        """Start the front; where it listens (``ports``, ``network_endpoint``, ``node_id``, ``node_ip``, ``pid``)."""
        import ray  # in a Ray worker process, it is there

        node_ip = ray.util.get_node_ip_address()
        self._lifeline = os.pipe()
        self._context = zmq.Context()
        options = {**plan.options, "owner": self._owner, "record": None, "vertex_ai": None}
        fronts = Fronts(
            1,
            plan.host,
            dict(plan.ports),
            options,
            self._lifeline[0],
            self._context,
            plan.startup_timeout_s,
            plan.stop_timeout_s,
            network=FrontNetwork(node_ip, plan.keys),
        )
        fronts.network_endpoints[0] = plan.network_endpoint
        self._fronts = fronts
        fronts.start()
        fronts.watch(self._restarted)
        return {
            "ports": {kind: fronts.ports.get(kind) for kind in ("http", "grpc", "metrics")},
            "network_endpoint": fronts.network_endpoints[0],
            "node_id": ray.get_runtime_context().get_node_id(),
            "node_ip": node_ip,
            "pid": fronts.pids[0],
        }

    def call(self, op: str, timeout_s: float, fields: dict[str, Any]) -> dict[str, Any]:
        """A control call to the front (`Fronts.call_one`): its reply; `StartupError` if it refused or is gone."""
        assert self._fronts is not None, "start() first"
        return self._fronts.call_one(0, op, timeout_s, **fields)

    def watch(self, seen: int, timeout_s: float) -> int:
        """How many times the front was restarted, once that is more than ``seen`` (or ``timeout_s`` passed, or
        the actor stops)."""
        with self._changed:
            self._changed.wait_for(lambda: self._restarts > seen or self._stopped, timeout_s)
            return self._restarts

    def _restarted(self, _: int) -> None:
        with self._changed:
            self._restarts += 1
            self._changed.notify_all()

    def stop(self) -> None:
        """Stop the front (it drains as any front does) and release its sockets; idempotent."""
        with self._changed:
            self._stopped = True
            self._changed.notify_all()
        if self._fronts is not None:
            self._fronts.close()
            self._fronts = None
        if self._context is not None:
            self._context.term()
            self._context = None
        if self._lifeline is not None:
            for fd in self._lifeline:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._lifeline = None
        remove_segments_of(self._owner)
