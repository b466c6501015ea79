"""`NodeFronts`: the front replicas of a `Serve` on the other nodes of its Ray cluster, as the owner sees them.

With ``RayBackend(node_fronts=True)`` (the default), every node of the cluster that does not share the owner's
host gets one front replica when the server starts (`FrontActor`, pinned to its node): clients may send requests
to any node, for instance through a load balancer over all of them, and each replica batches its own requests and
sends them to the model's instances wherever they run. ``node_fronts=[...]`` names the nodes (Ray node ids or IP
addresses); those get one even if they share the owner's host (then give them ports of their own with
``node_ports``). ``node_fronts=False``: the fronts stay on the owner's host.

Each replica is a `NodeFront`: what `fronts.Fronts` needs of a front it does not run itself (``call``, ``alive``,
``lost``, ``close``). A thread watches them: a replica whose front process was restarted by its actor is flagged
(`take_restart`), and `Fronts` loads the models into it again as for a front of its own; a replica whose actor
died on a live node is started again on that node, on the same ports and network endpoint (the workers reconnect
to it by themselves); one whose node is gone is lost for good (the node's clients went with it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import StartupError
from ..transport.shm import remove_segments_of
from .front_actor import FrontActor, FrontPlan
from .same_host import shares_host, write_probe

__all__ = ["NodeFront", "NodeFronts"]

log = logging.getLogger("pybind_serve")

WATCH_S = 1.0  # how long one `FrontActor.watch` call waits before the thread looks again
CALL_MARGIN_S = 10.0  # what a control call through Ray may take beyond the front's own time limit
PROBE_TAG = "frontprobe"


@dataclass(eq=False)
class NodeFront:
    """One front replica on another node: its actor, where it listens, and whether it is lost for good."""

    handle: Any  # ray.actor.ActorHandle of its FrontActor
    plan: FrontPlan
    node_id: str
    node_ip: str
    ports: dict[str, int | None]
    network_endpoint: str
    pid: int
    lost: bool = False
    restarts_seen: int = 0
    restarted: bool = False  # its front process was restarted: the models must be loaded into it again
    watching: Any = None  # ray.ObjectRef of the pending `watch` call
    ray: Any = field(default=None, repr=False)  # the ray module, for its calls

    def call(self, op: str, timeout_s: float, **fields: Any) -> dict[str, Any]:
        """A control call to the replica's front; `StartupError` if it refuses, is gone, or does not answer."""
        if self.lost:
            raise StartupError(f"the front replica on node {self.node_ip} is gone with its node")
        try:
            reply = self.ray.get(self.handle.call.remote(op, timeout_s, fields), timeout=timeout_s + CALL_MARGIN_S)
        except Exception as exc:
            cause = getattr(exc, "cause", None) or exc
            raise StartupError(f"the front replica on node {self.node_ip} did not take {op!r}: {cause}") from None
        return dict(reply)

    def alive(self) -> bool:
        return not self.lost

    def take_restart(self) -> bool:
        """Whether its front was restarted since the last time this was asked."""
        restarted, self.restarted = self.restarted, False
        return restarted

    def describe(self) -> dict[str, Any]:
        """Where clients reach it: node id and address, ports."""
        return {"node_id": self.node_id, "node_ip": self.node_ip, **{f"{k}_port": v for k, v in self.ports.items()}}


class NodeFronts:
    """The front replicas on the cluster's other nodes, started, watched, restarted and stopped."""

    def __init__(
        self,
        ray: Any,
        nodes: bool | Sequence[str],
        plan: FrontPlan,
        owner: str,
    ) -> None:
        self._ray, self._plan, self._owner = ray, plan, owner
        self._remote = ray.remote(FrontActor)
        self.members: list[NodeFront] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._started = False
        self._nodes = nodes
        self._watcher = threading.Thread(target=self._watch, name="pybind_serve-node-fronts", daemon=True)

    def start(self) -> list[NodeFront]:
        """Start a replica on each chosen node (in parallel); those that share the owner's host are skipped unless
        named. `StartupError` if one cannot start (the others are stopped)."""
        nodes = self._chosen_nodes()
        if self._nodes is True:  # a task on each node (Ray's pooled workers: quick) says which share this host
            probe, shares = write_probe(self._owner, PROBE_TAG), self._ray.remote(shares_host)
            checks = [shares.options(num_cpus=0, scheduling_strategy=_on(n["NodeID"])).remote(probe, ()) for n in nodes]
            shared = self._ray.get(checks, timeout=self._plan.startup_timeout_s + CALL_MARGIN_S)
            nodes = [node for node, same in zip(nodes, shared, strict=True) if not same]
        pending = [(node, self._launch(node["NodeID"], self._plan)) for node in nodes]
        try:
            for node, (handle, ref) in pending:
                self.members.append(self._started_member(handle, ref, node["NodeID"], self._plan))
        except BaseException:
            for _, (handle, _) in pending:
                self._kill(handle)
            raise
        for member in self.members:
            log.info(
                "front replica on node %s (%s): http %s, grpc %s, metrics %s",
                member.node_ip,
                member.node_id[:12],
                *(member.ports.get(k) for k in ("http", "grpc", "metrics")),
            )
        if self.members and self._plan.host in ("127.0.0.1", "::1", "localhost"):
            log.warning(
                "the front replicas listen on %s of their nodes: only clients on those nodes reach them; "
                "Serve(host='0.0.0.0') for clients of other hosts",
                self._plan.host,
            )
        self._started = True
        self._watcher.start()
        return self.members

    def endpoints(self) -> tuple[str, ...]:
        """The replicas' TCP endpoints for workers, in the order of ``members``."""
        return tuple(member.network_endpoint for member in self.members)

    def _chosen_nodes(self) -> list[dict[str, Any]]:
        alive = [node for node in self._ray.nodes() if node.get("Alive")]
        if self._nodes is True:
            return alive
        wanted = list(self._nodes) if not isinstance(self._nodes, bool) else []
        chosen = [n for n in alive if n["NodeID"] in wanted or n.get("NodeManagerAddress") in wanted]
        found = {n["NodeID"] for n in chosen} | {n.get("NodeManagerAddress") for n in chosen}
        missing = [name for name in wanted if name not in found]
        if missing:
            known = [(n["NodeID"][:12], n.get("NodeManagerAddress")) for n in alive]
            raise StartupError(f"node_fronts names nodes the Ray cluster has not alive: {missing}; it has {known}")
        return chosen

    def _launch(self, node_id: str, plan: FrontPlan) -> tuple[Any, Any]:
        handle = self._remote.options(
            num_cpus=0,
            max_restarts=0,
            max_concurrency=8,  # call, watch and stop come beside each other
            scheduling_strategy=_on(node_id),
        ).remote()
        return handle, handle.start.remote(plan)

    def _started_member(self, handle: Any, ref: Any, node_id: str, plan: FrontPlan) -> NodeFront:
        try:
            info = self._ray.get(ref, timeout=plan.startup_timeout_s + CALL_MARGIN_S)
        except Exception as exc:
            self._kill(handle)
            cause = getattr(exc, "cause", None) or exc
            raise StartupError(f"the front replica on node {node_id[:12]} could not start: {cause}") from None
        return NodeFront(
            handle,
            plan,
            info["node_id"],
            info["node_ip"],
            info["ports"],
            info["network_endpoint"],
            info["pid"],
            ray=self._ray,
        )

    # -- watching -----------------------------------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                live = [m for m in self.members if not m.lost]
                for member in live:
                    if member.watching is None:
                        member.watching = member.handle.watch.remote(member.restarts_seen, WATCH_S)
                refs = {m.watching: m for m in live}
            if not refs:
                self._stopping.wait(WATCH_S)
                continue
            ready, _ = self._ray.wait(list(refs), num_returns=len(refs), timeout=WATCH_S + 1.0)
            for ref in ready:
                self._watched(refs[ref], ref)

    def _watched(self, member: NodeFront, ref: Any) -> None:
        member.watching = None
        try:
            restarts = self._ray.get(ref)
        except Exception as exc:  # the actor died: with its node, or on its own
            if not self._stopping.is_set():
                self._replace(member, exc)
            return
        if restarts > member.restarts_seen:
            member.restarts_seen = restarts
            member.restarted = True
            log.warning("the front on node %s was restarted; loading the models into it again", member.node_ip)

    def _replace(self, member: NodeFront, error: Exception) -> None:
        """A replica's actor died: start it again on its node if the node lives, else it is lost."""
        node_alive = any(n["NodeID"] == member.node_id and n.get("Alive") for n in self._ray.nodes())
        if not node_alive:
            member.lost = True
            log.error("the front replica on node %s is gone with its node", member.node_ip)
            return
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        log.error("the front replica on node %s died (%s); starting it again", member.node_ip, first_line)
        plan = replace(member.plan, ports=dict(member.ports), network_endpoint=member.network_endpoint)
        try:
            handle, ref = self._launch(member.node_id, plan)
            fresh = self._started_member(handle, ref, member.node_id, plan)
        except StartupError as exc:
            member.lost = True
            log.error("the front replica on node %s could not start again: %s", member.node_ip, exc)
            return
        with self._lock:
            member.handle, member.pid, member.plan = fresh.handle, fresh.pid, plan
            member.restarts_seen, member.restarted = 0, True

    # -- stopping -----------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every replica (they drain in parallel); idempotent."""
        self._stopping.set()
        if self._started and self._watcher is not threading.current_thread():
            self._watcher.join()
        members = [m for m in self.members if not m.lost]
        refs = [m.handle.stop.remote() for m in members]
        if refs:
            self._ray.wait(refs, num_returns=len(refs), timeout=self._plan.stop_timeout_s + CALL_MARGIN_S)
        for member in members:
            self._kill(member.handle)
        self.members = []
        remove_segments_of(self._owner, PROBE_TAG)

    def _kill(self, handle: Any) -> None:
        try:
            self._ray.kill(handle, no_restart=True)
        except Exception as exc:  # Ray shut down meanwhile
            log.debug("could not kill a front replica's actor: %r", exc)


def _on(node_id: str) -> Any:
    """Ray's scheduling strategy that runs an actor or a task on that node and no other."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id, soft=False)
