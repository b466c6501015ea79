"""`ActorPool`: the Ray actors serving a `Serve`'s models; it starts them where their resources say, watches them,
replaces those that die, and stops them.

Each instance of a model is a `WorkerActor` created with the model's `Resources` (``num_cpus``, ``num_gpus``,
``memory``, custom resources) and ``max_restarts=0``: Ray places it on a node that has them free. The pool, not Ray,
starts a replacement when one dies, as the `Supervisor` does for a worker process, because the fronts must first
hear that the old one is gone (its batch in flight fails with `WorkerDiedError`; its queue goes to the model's
other instances) and the new one must say hello under a new identity. The pool learns of a death through the
result of the actor's ``run`` call, which only comes when the worker stops: a call that fails means the actor
died (its process, or its node); one that returns means it could not start (the fronts were told why). Either
way the replacement starts at once the first time, then after a delay that doubles while they keep dying soon
after their start (`Backoff`); Ray places it wherever the resources are free, on another node if its own is gone.

A model's ``devices`` are the cluster's GPUs, not the owner's: `place` resolves them against the cluster's GPU
count before the fronts load the model (``"all"``: every whole GPU; ``instances`` on each, each asking for its
share of one; Ray chooses which GPU). Before starting a model, the pool checks that some node of the cluster has the
resources an instance asks for at all (free or not), so that a resource no node has fails ``bind`` at once instead
of waiting forever.

A model with ``ModelConfig(autoscale=Autoscale(...))`` starts at ``instances`` (or its minimum). The pool's second
thread (`scaling.Sampler`) looks at the fronts' queues while some model autoscales or has an
``execution_timeout_s``: it grows and shrinks the pool (`resize`) as each `Scaler` decides, and kills
the actors whose batch passed their model's execution timeout (`kill_overran`), which are replaced as those that die.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..autoscale import Scaler
from ..backend import FrontCalls, Notify, WorkerSite
from ..context import WorkerContext
from ..errors import ConfigurationError, StartupError
from ..placement import resolve_on_cluster
from ..resources import Resources
from ..spec import ModelSpec
from ..supervisor import STOP_GRACE_S, Backoff
from ..transport.shm import remove_segments_of
from ..worker_process import Job, Site, dumps
from .actor import ActorPlan, WorkerActor
from .same_host import write_probe
from .scaling import Sampler

__all__ = ["ActorPool", "actor_options"]

log = logging.getLogger("pybind_serve")

WATCH_INTERVAL_S = 0.2  # the longest the pool's thread waits before looking at its actors again
CONFIRM_S = 60.0  # the longest a death is waited for Ray to confirm (its health checks take 15 s or more by default)


def actor_options(spec: ModelSpec, instance: int = 0) -> dict[str, Any]:
    """Ray's actor options for instance ``instance`` of ``spec``: its `Resources` (one CPU when it gives none). With
    ``devices`` (`ActorPool.place` resolved them), an instance on a GPU entry and no ``num_gpus`` asks for its share
    of one GPU (``1 / instances``: ``instances`` share each), one on a ``"cpu"`` entry for no GPU.

    >>> from pybind_serve import ModelConfig
    >>> spec = ModelSpec("m", 1, (), (), ModelConfig(devices=["cuda:0", "cpu"], instances=2))
    >>> [actor_options(spec, i)["num_gpus"] for i in range(4)]
    [0.5, 0.5, 0.0, 0.0]
    """
    resources = spec.config.resources or Resources()
    num_gpus = resources.num_gpus
    device = _device_of(spec, instance)
    if device == "cpu":
        num_gpus = 0.0
    elif device is not None and not num_gpus:
        num_gpus = 1.0 / (spec.config.instances or 1)
    options: dict[str, Any] = {"num_cpus": resources.num_cpus, "num_gpus": num_gpus}
    if resources.memory is not None:
        options["memory"] = resources.memory
    if resources.custom:
        options["resources"] = dict(resources.custom)
    return options


def _device_of(spec: ModelSpec, instance: int) -> str | None:
    """The ``devices`` entry of an instance (``instances`` on each entry, in order; those started beyond them, by
    autoscaling, go round again), ``"cuda"`` for ``devices`` not resolved yet; None without ``devices``."""
    devices = spec.config.devices
    if devices is None:
        return None
    if not isinstance(devices, tuple):
        return "cuda"
    return devices[(instance // (spec.config.instances or 1)) % len(devices)]


@dataclass(eq=False)
class _Actor:
    identity: str
    tag: str
    instance: int
    handle: Any  # ray.actor.ActorHandle
    done: Any  # ray.ObjectRef of its ``run`` call
    placed: Any  # ray.ObjectRef of its first ``where`` call: its node, once it started
    started: float = field(default_factory=time.monotonic)


@dataclass(eq=False)
class _Group:
    spec: ModelSpec
    functions: list[Any]  # one per instance
    actors: list[_Actor] = field(default_factory=list)
    backoff: Backoff = field(default_factory=Backoff)
    restarts_due: list[tuple[float, int]] = field(default_factory=list)  # (monotonic time, instance)
    scaler: Scaler | None = None  # with ModelConfig(autoscale=...)
    started: int = 0  # instances started so far (the next one's index)


class ActorPool:
    """Every Ray actor of one `Serve`'s models (`backend.WorkerPool`)."""

    def __init__(
        self, site: WorkerSite, notify: Notify, fronts: FrontCalls, transport: str, prefix: str = "ray"
    ) -> None:
        import ray  # RayBackend.open checked that it is there

        self._ray = ray
        self._remote = ray.remote(WorkerActor)
        self._site, self._notify, self._transport = site, notify, transport
        self._prefix = prefix
        self._probe = write_probe(site.owner)
        self._groups: dict[tuple[str, int], _Group] = {}
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._monitor = threading.Thread(target=self._watch, name="pybind_serve-ray", daemon=True)
        self._monitor.start()
        self._sampler = Sampler(self, fronts, self._stopping)
        self._sampler.start()

    # -- starting -----------------------------------------------------------------------------------------------

    def start(self, spec: ModelSpec, fn: Any) -> _Group:
        """Start a model version's actors (they say hello to the fronts once built). `StartupError` when no node
        of the cluster has what one instance asks for."""
        autoscale = spec.config.autoscale
        count = spec.config.instances or (autoscale.min_instances if autoscale else spec.instance_count)
        if spec.config.devices is not None:  # `instances` on each device
            count = spec.instance_count
        functions = list(fn) if isinstance(fn, (list, tuple)) else [fn]
        if isinstance(fn, (list, tuple)) and spec.config.devices is not None and len(functions) != count:
            problem = f"{len(functions)} functions for {count} instances: give one per instance"  # "all": known now
            raise ConfigurationError.collect(f"bind({spec.name!r})", [problem])
        checked: list[dict[str, Any]] = []  # each kind of instance once (a share of a GPU, or none)
        for options in (actor_options(spec, i) for i in range(count)):
            if options not in checked:
                checked.append(options)
                self._check_feasible(spec, options)
        group = _Group(spec, functions, scaler=Scaler(autoscale) if autoscale else None)
        try:
            for _ in range(max(count, len(functions))):
                group.actors.append(self._start_actor(group))
        except BaseException:
            self._stop([group], STOP_GRACE_S)
            raise
        with self._lock:
            self._groups[(spec.name, spec.version)] = group
        return group

    def _check_feasible(self, spec: ModelSpec, options: dict[str, Any]) -> None:
        wanted = {"CPU": options["num_cpus"], "GPU": options["num_gpus"], **options.get("resources", {})}
        if "memory" in options:
            wanted["memory"] = options["memory"]
        wanted = {name: amount for name, amount in wanted.items() if amount}
        nodes = [node.get("Resources", {}) for node in self._ray.nodes() if node.get("Alive")]
        if any(all(node.get(name, 0) >= amount for name, amount in wanted.items()) for node in nodes):
            return
        raise StartupError(
            f"{spec.label}: no node of the Ray cluster has the resources one instance asks for, {wanted}; "
            f"its {len(nodes)} live nodes have {[_visible(node) for node in nodes]}"
        )

    def _start_actor(self, group: _Group, instance: int | None = None) -> _Actor:
        """Start an actor for an instance of the group (a new one unless ``instance`` is given)."""
        spec, site = group.spec, self._site
        if instance is None:
            instance, group.started = group.started, group.started + 1
        n = next(self._ids)
        identity, tag = f"{self._prefix}-{n}:{spec.name}:{spec.version}", f"r{n}"
        gpu = actor_options(spec, instance)["num_gpus"] > 0
        device = "cuda:0" if gpu else "cpu"  # Ray sets CUDA_VISIBLE_DEVICES to the actor's GPUs
        context = WorkerContext(spec.name, spec.version, instance, device, device, tuple(t.name for t in spec.outputs))
        job = Job(
            Site(site.endpoints, site.owner, -1, -1, site.idle_release_s),
            spec,
            group.functions[instance % len(group.functions)],
            context,
            identity,
            tag,
        )
        try:
            payload = dumps(job)
        except Exception as exc:
            raise TypeError(f"{spec.label}: the function cannot be sent to a Ray actor: {exc}") from exc
        plan = ActorPlan(
            identity,
            spec.name,
            spec.version,
            site.endpoints,
            site.network_endpoints,
            site.network.keys.public if site.network.keys is not None else None,
            self._probe,
            self._transport,
            tuple(sys.path),
            site.replica_endpoints,
        )
        # Several calls at once: `run` holds one thread for as long as it serves; `stop` and `where` come beside it.
        options = {**actor_options(spec, instance), "max_restarts": 0, "max_concurrency": 4}
        handle: Any = self._remote.options(**options).remote()
        return _Actor(identity, tag, instance, handle, handle.run.remote(plan, payload), handle.where.remote())

    # -- what Serve asks ----------------------------------------------------------------------------------------

    def place(self, spec: ModelSpec) -> ModelSpec:
        """``spec`` with its ``devices`` resolved against the Ray cluster's GPUs (`placement.resolve_on_cluster`),
        not this host's: ``"all"`` is every GPU of the cluster, ``n`` or a list of ``"cuda:i"`` that many GPUs, which
        Ray chooses. `StartupError` when the cluster has fewer (any, for ``"all"``), naming what its nodes have."""
        devices = spec.config.devices
        if devices is None:
            return spec
        gpus = float(self._ray.cluster_resources().get("GPU", 0))
        nodes = [_visible(node.get("Resources", {})) for node in self._ray.nodes() if node.get("Alive")]
        try:
            resolved = resolve_on_cluster(devices, gpus, f"its {len(nodes)} live nodes have {nodes}", "the Ray cluster")
        except StartupError as exc:
            raise StartupError(f"{spec.label}: {exc}") from None
        return replace(spec, config=replace(spec.config, devices=resolved))

    def group(self, name: str, version: int) -> _Group | None:
        return self._groups.get((name, version))

    def identities(self) -> list[str]:
        with self._lock:
            return [actor.identity for group in self._groups.values() for actor in group.actors]

    def where(self, name: str, version: int = 1, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Where each live actor of a model version runs (`WorkerActor.where`: node id, host, pid, transport); those
        that do not answer (dead, not yet replaced) are left out."""
        with self._lock:
            group = self._groups.get((name, version))
            handles = [actor.handle for actor in group.actors] if group is not None else []
        found = []
        for ref in [handle.where.remote() for handle in handles]:
            try:
                found.append(self._ray.get(ref, timeout=timeout_s))
            except Exception as exc:  # RayActorError, ActorUnavailableError, GetTimeoutError
                log.debug("an actor of %s v%d did not say where it is: %r", name, version, exc)
        return found

    def actors(self, name: str, version: int = 1) -> list[Any]:
        """The Ray actor handles of a model version's live instances (to inspect them, or to kill one in a test)."""
        with self._lock:
            group = self._groups.get((name, version))
            return [actor.handle for actor in group.actors] if group is not None else []

    def stop_group(self, name: str, version: int, timeout_s: float = STOP_GRACE_S) -> None:
        with self._lock:
            group = self._groups.pop((name, version), None)
        if group is not None:
            self._stop([group], timeout_s)

    def close(self, timeout_s: float = STOP_GRACE_S) -> None:
        """Stop every actor and the pool's thread; idempotent."""
        with self._lock:
            self._stopping.set()
            groups = list(self._groups.values())
            self._groups.clear()
        self._stop(groups, timeout_s)
        if self._monitor is not threading.current_thread():
            self._monitor.join(timeout_s)
        self._sampler.join(timeout_s)
        remove_segments_of(self._site.owner, "probe")

    def _stop(self, groups: Sequence[_Group], timeout_s: float) -> None:
        """Ask the actors to stop (each answers its batch in hand first), wait up to ``timeout_s``, then kill them
        all (a stopped actor would keep its resources)."""
        self.stop_actors([actor for group in groups for actor in group.actors], timeout_s)

    def stop_actors(self, actors: Sequence[_Actor], timeout_s: float) -> None:
        """Ask these actors to stop, wait up to ``timeout_s``, then kill them (they are out of the pool already)."""
        for actor in actors:
            actor.handle.stop.remote()
        if actors:
            self._ray.wait([a.done for a in actors], num_returns=len(actors), timeout=timeout_s)
        for actor in actors:
            self._ray.kill(actor.handle, no_restart=True)
            remove_segments_of(self._site.owner, actor.tag)

    # -- watching -----------------------------------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                running = {a.done: (g, a) for g in self._groups.values() for a in g.actors}
                due = [t for g in self._groups.values() for t, _ in g.restarts_due]
            timeout = min([WATCH_INTERVAL_S, *(max(t - time.monotonic(), 0.0) for t in due)])
            if running:
                ended, _ = self._ray.wait(list(running), num_returns=1, timeout=timeout)
            else:
                ended = []
                self._stopping.wait(timeout)
            for ref in ended:
                self._reap(*running[ref], ref)
            self._start_due()

    def _reap(self, group: _Group, actor: _Actor, done: Any) -> None:
        """An actor's ``run`` call ended: unless it was stopped on purpose, schedule its replacement, then tell the
        fronts (`_tell`, on a thread of its own when the death must first be confirmed)."""
        error: Exception | None = None
        try:
            outcome = f"could not start ({self._ray.get(done)})"
        except Exception as exc:  # ActorDiedError, ActorUnavailableError...: its process or its node is gone
            error, outcome = exc, ""
        with self._lock:
            current = self._groups.get((group.spec.name, group.spec.version))
            if self._stopping.is_set() or current is not group or actor not in group.actors:
                return  # stopped on purpose
            group.actors.remove(actor)
            delay = group.backoff.died(time.monotonic() - actor.started)
            group.restarts_due.append((time.monotonic() + delay, actor.instance))
        if error is None:
            self._tell(group, actor, outcome, delay, node_lost=False)
        else:
            threading.Thread(target=self._confirm, args=(group, actor, error, delay), daemon=True).start()

    def _confirm(self, group: _Group, actor: _Actor, error: Exception, delay: float) -> None:
        """Whether an actor died with its node, then `_tell`. Its call may fail before Ray has made up its mind
        (``ActorUnavailableError``: the connection closed, the GCS has not yet marked the node dead): a new call
        fails once Ray has decided, within its health checks' time."""
        try:
            if not isinstance(error, self._ray.exceptions.ActorDiedError):
                try:
                    self._ray.get(actor.handle.where.remote(), timeout=CONFIRM_S)
                except Exception as exc:
                    error = exc
            node_lost = self._node_lost(actor)
        except Exception:  # Ray shut down meanwhile
            node_lost = False
        first_line = str(error).splitlines()[0] if str(error) else ""
        outcome = "died with its node" if node_lost else f"died ({type(error).__name__}: {first_line})"
        self._tell(group, actor, outcome, delay, node_lost)

    def _tell(self, group: _Group, actor: _Actor, outcome: str, delay: float, node_lost: bool) -> None:
        """Release what the actor held and tell the fronts it is gone: its batch in flight fails, or, lost with its
        node (through no fault of its own), runs again on another instance."""
        with contextlib.suppress(Exception):  # Ray shut down meanwhile
            self._ray.kill(actor.handle, no_restart=True)  # one that returned (or lives on) holds its resources
        remove_segments_of(self._site.owner, actor.tag)  # a worker on this host leaves its segments
        why = f"Ray actor {outcome}"
        if delay:
            why += f"; it keeps dying ({group.backoff.failures} times in a row), next start in {delay:g} s"
        log.error("%s: worker %s %s; starting a new one", group.spec.label, actor.identity, why)
        self._notify(actor.identity, why, node_lost)

    def _node_lost(self, actor: _Actor) -> bool:
        """Whether the node an actor ran on is dead (then its death was not its batch's doing)."""
        try:
            if not self._ray.wait([actor.placed], timeout=0)[0]:
                return False  # it never started
            node = self._ray.get(actor.placed)["node_id"]
            return not any(n["NodeID"] == node and n.get("Alive") for n in self._ray.nodes())
        except Exception:
            return False

    # -- what the sampling thread asks (scaling.Sampler) -----------------------------------------------------------

    def sampled(self) -> list[_Group]:
        """The groups to look at the fronts for: those that autoscale or have an ``execution_timeout_s``."""
        with self._lock:
            return [g for g in self._groups.values() if g.scaler is not None or g.spec.config.execution_timeout_s]

    def resize(self, group: _Group, decide: Callable[[int], int]) -> _Actor | None:
        """Carry out ``decide(instances)`` (the instances running, starting or due to restart: how many to add or
        remove), taken under the pool's lock: start as many more, or take the newest actor out of the pool to
        drain and stop (from then on its end is not a death to repair; None: nothing to retire, e.g. its last)."""
        with self._lock:
            if not self._current(group):
                return None
            delta = decide(len(group.actors) + len(group.restarts_due))
            for _ in range(max(delta, 0)):
                group.actors.append(self._start_actor(group))
            return group.actors.pop() if delta < 0 and len(group.actors) > 1 else None

    def put_back(self, group: _Group, actor: _Actor) -> bool:
        """Give a group back the actor `resize` took out (a front kept it: its model's last worker there); False
        when the group was stopped meanwhile (the actor is then to be stopped)."""
        with self._lock:
            if not self._current(group):
                return False
            group.actors.append(actor)
            return True

    def _current(self, group: _Group) -> bool:
        """Whether a group still serves (not stopped, nor replaced by a new bind); under the lock."""
        return not self._stopping.is_set() and self._groups.get((group.spec.name, group.spec.version)) is group

    def kill_overran(self, identity: str) -> None:
        """A front says that this actor's batch passed its model's ``execution_timeout_s`` (it failed the batch and
        let the actor go): kill it, tell every front it is gone, and start another, as for an actor that died
        (with the same back-off while they keep dying, or overrunning, soon after their start). Nothing when it is
        not one of ours any more (dead, replaced or stopped meanwhile)."""
        with self._lock:
            found = [(g, a) for g in self._groups.values() for a in g.actors if a.identity == identity]
            if not found or self._stopping.is_set():
                return
            group, actor = found[0]
            group.actors.remove(actor)  # from now on its end is not a death to repair: this is its repair
            delay = group.backoff.died(time.monotonic() - actor.started)
            group.restarts_due.append((time.monotonic() + delay, actor.instance))
        limit = group.spec.config.execution_timeout_s or 0.0
        self._tell(group, actor, f"was killed: a batch passed execution_timeout_s={limit:g} s", delay, False)

    def _start_due(self) -> None:
        now = time.monotonic()
        with self._lock:
            for group in self._groups.values():
                for entry in [e for e in group.restarts_due if e[0] <= now]:
                    group.restarts_due.remove(entry)
                    try:
                        group.actors.append(self._start_actor(group, entry[1]))
                    except Exception:
                        log.exception("%s: could not start a Ray actor", group.spec.label)


def _visible(node: dict[str, float]) -> dict[str, float]:
    """A node's resources without Ray's per-node bookkeeping entries (``node:<ip>``...)."""
    return {name: amount for name, amount in node.items() if not name.startswith("node:")}
