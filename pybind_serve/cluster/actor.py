"""`WorkerActor`: one worker of a bound model, run by Ray as an actor on whichever node its resources placed it.

The owner's `ActorPool` creates the actor and calls `WorkerActor.run` once: it chooses the transport (the fronts'
ipc ROUTERs and shared memory when this process shares the owner's host, their TCP ROUTERs with the tensor bytes in
the messages otherwise: `same_host`), unpickles the job (the model's spec and function, pickled by the owner with
cloudpickle as for a spawned worker process), builds the function and serves batches until `stop`; then `run`
returns. While it runs, the call's pending result is how the owner learns that the actor died: Ray fails it when
the actor's process or its node goes.

If the function cannot be unpickled or built here, the fronts are told (a ``failed`` frame, as a worker process
does), so that ``bind`` fails with the reason instead of waiting for an instance that never comes.

This module is imported by Ray's worker processes (by name: every node needs pybind_serve installed); it imports
nothing of Ray at its top, so that pybind_serve imports without Ray.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import socket
import sys
import threading
from dataclasses import dataclass
from typing import Any

import zmq

from ..errors import StartupError, client_message
from ..transport.channel import WorkerChannel
from ..transport.network import new_keys
from ..worker_process import Job, serve_job
from .same_host import Probe, shares_host

__all__ = ["ActorPlan", "WorkerActor"]

log = logging.getLogger("pybind_serve")

TRANSPORTS = ("auto", "shm", "tcp")


@dataclass(frozen=True)
class ActorPlan:
    """What an actor needs besides its job: where the fronts are, and how to reach them."""

    identity: str
    model: str
    version: int
    endpoints: tuple[str, ...]  # the fronts' ipc endpoints (the owner's host)
    network_endpoints: tuple[str, ...]  # their TCP endpoints
    server_key: str | None  # the fronts' CurveZMQ public key; None: the network transport is not encrypted
    probe: Probe
    transport: str  # "auto", "shm" (must share the owner's host) or "tcp" (always the network)
    paths: tuple[str, ...]  # the owner's sys.path: those that exist here are added (as for a spawned worker)
    replica_endpoints: tuple[str, ...] = ()  # the TCP endpoints of the front replicas on other nodes


class WorkerActor:
    """A Ray actor serving one worker of a model; `run` serves until `stop` (or the actor's death)."""

    def __init__(self) -> None:
        self._stop_read, self._stop_write = os.pipe()
        self._lock = threading.Lock()
        self._transport = ""

    def run(self, plan: ActorPlan, payload: bytes) -> str:
        """Serve the job until stopped: ``"stopped"``, or ``"failed"`` when it could not start (the fronts were told
        why)."""
        context: zmq.Context[Any] = zmq.Context()
        try:
            channel = self._channel(context, plan)
            try:
                for path in reversed(plan.paths):
                    if path and path not in sys.path and os.path.isdir(path):
                        sys.path.insert(0, path)
                job: Job = pickle.loads(payload)
            except Exception as exc:
                error = client_message(f"the model's function could not be loaded in its Ray actor: {exc!r}")
                log.error("%s v%d: %s", plan.model, plan.version, error)
                channel.broadcast({"op": "failed", "model": plan.model, "version": plan.version, "error": error})
                channel.close(linger_ms=1000)
                return "failed"
            # No pid to kill from a front: one that overruns execution_timeout_s is killed by the owner's pool.
            return "stopped" if serve_job(job, channel, None, owner_kills=True) else "failed"
        finally:
            context.destroy(linger=0)

    def _channel(self, context: zmq.Context[Any], plan: ActorPlan) -> WorkerChannel:
        local = plan.transport != "tcp" and shares_host(plan.probe, plan.endpoints)
        if plan.transport == "shm" and not local:
            raise StartupError(
                f"{plan.model} v{plan.version}: transport='shm' but this Ray worker ({socket.gethostname()}) does not "
                "share the server's /dev/shm and socket files; use transport='auto'"
            )
        self._transport = "shm" if local else "tcp"
        # The owner's fronts first (over ipc and shared memory, or the network), then the replicas (the network).
        fronts = plan.endpoints if local else plan.network_endpoints
        inline = [not local] * len(fronts) + [True] * len(plan.replica_endpoints)
        curve = (plan.server_key, new_keys()) if plan.server_key is not None else None
        endpoints = (*fronts, *plan.replica_endpoints)
        return WorkerChannel(context, endpoints, plan.identity, self._stop_read, inline=inline, curve=curve)

    def stop(self) -> None:
        """Stop serving: `run` returns once the batch in hand is answered."""
        with self._lock, contextlib.suppress(OSError):
            if self._stop_write >= 0:
                os.close(self._stop_write)
                self._stop_write = -1

    def where(self) -> dict[str, Any]:
        """Where this actor runs: Ray's node id, the host's name, the process, and the transport it uses."""
        import ray  # in a Ray worker process, it is there

        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "transport": self._transport,
        }
