"""What a `Serve` asks of a worker backend: starting the bound models' workers somewhere other than this host's
processes (`Serve(backend=...)`; `pybind_serve.cluster.RayBackend` runs them as Ray actors).

The fronts of this host are processes started by `Serve`; a backend may add front replicas on its other hosts
(`Backend.front_replicas`, `FrontSite`), which `Serve` calls as its own (`fronts.RemoteFront`). A backend's workers
reach this host's fronts over their ipc ROUTERs with shared memory when they share this host, and over their TCP
ROUTERs (`WorkerSite`) with the tensor bytes in the messages when they do not, and the replicas on other hosts
always over theirs. Either way they speak the same frames as a local worker (`transport.frames`), and every front
batches, dispatches and answers as for any other worker.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

from .fronts import Fronts, RemoteFront
from .spec import ModelSpec
from .transport.network import FrontNetwork

__all__ = [
    "Backend",
    "FrontCalls",
    "FrontReplicas",
    "FrontSite",
    "FrontsSample",
    "Notify",
    "QueueSample",
    "WorkerPool",
    "WorkerSite",
    "front_calls",
]

# (worker identity, why it is gone, whether its batch in flight may run again elsewhere: it was lost through no
# fault of its own, e.g. with its node): the fronts fail that batch, or give it to another worker
Notify = Callable[[str, str, bool], None]


class QueueSample(NamedTuple):
    """A model version's queue at one look, over every front (the autoscaling signals)."""

    queued: int = 0  # requests queued, summed over the fronts
    busy: int = 0  # workers with a batch in flight, summed over the fronts (a worker busy for two counts twice)
    waited_s: float = 0.0  # how long the oldest queued request has waited: the longest over the fronts; 0: none


@dataclass(frozen=True)
class FrontsSample:
    """What the fronts said at one look: each model version's `QueueSample`, and the workers that passed their
    model's ``execution_timeout_s`` and that their owner is to kill (the fronts let them go already)."""

    queues: dict[tuple[str, int], QueueSample]
    overran: frozenset[str]


@dataclass(frozen=True)
class FrontCalls:
    """What a backend may ask of the fronts (from any thread): ``sample()``, a `FrontsSample` (every front's
    queues, and the workers to kill); ``drain(identity, timeout_s)``, take a worker out of service on every front
    once its batches in flight are answered (whether every front did: a front keeps its model's last worker)."""

    sample: Callable[[], FrontsSample]
    drain: Callable[[str, float], bool]


def front_calls(fronts: Fronts) -> FrontCalls:
    """`FrontCalls` over a `Serve`'s front processes."""

    def sample() -> FrontsSample:
        queues: dict[tuple[str, int], QueueSample] = {}
        overran: set[str] = set()
        for reply in fronts.call("queues", 5.0):
            for name, version, queued, busy, waited_ms in reply["models"]:
                before = queues.get((name, version), QueueSample())
                waited_s = max(before.waited_s, waited_ms / 1000)
                queues[(name, version)] = QueueSample(before.queued + queued, before.busy + busy, waited_s)
            overran.update(reply.get("overran", ()))
        return FrontsSample(queues, frozenset(overran))

    def drain(identity: str, timeout_s: float) -> bool:
        replies = fronts.call("drain", timeout_s + 5.0, identity=identity, wait_s=timeout_s)
        return all(reply.get("drained") for reply in replies)

    return FrontCalls(sample, drain)


@dataclass(frozen=True)
class WorkerSite:
    """Where a backend's workers connect, and how their shared memory is named when they are on this host."""

    endpoints: tuple[str, ...]  # every front's ipc endpoint (this host)
    network_endpoints: tuple[str, ...]  # every front's TCP endpoint, in the same order
    network: FrontNetwork  # the fronts' address and keys (workers need only the public one)
    owner: str  # the server's shared-memory owner name
    idle_release_s: float
    replica_endpoints: tuple[str, ...] = ()  # the TCP endpoints of the front replicas on other hosts, in order


@dataclass(frozen=True)
class FrontSite:
    """What a backend needs to start front replicas on its other hosts: the options every front gets (as `Serve`
    gives its own), where clients connect (``host``, and the ports of this host's fronts), the fronts' network keys,
    and time limits."""

    options: dict[str, Any]
    host: str
    ports: dict[str, int | None]  # "http", "grpc", "metrics" of this host's fronts (None: that port is off)
    network: FrontNetwork
    owner: str
    startup_timeout_s: float
    stop_timeout_s: float


class FrontReplicas(Protocol):
    """A backend's front replicas on its other hosts, started (``members``, in order) until `close`."""

    @property
    def members(self) -> Sequence[RemoteFront]: ...

    def endpoints(self) -> tuple[str, ...]:
        """Their TCP endpoints for workers, in the order of ``members``."""
        ...

    def close(self) -> None:
        """Stop them all (they drain in parallel); idempotent."""
        ...


class WorkerPool(Protocol):
    """The workers of every bound model of one `Serve`, as `supervisor.Supervisor` keeps them on one host."""

    def place(self, spec: ModelSpec) -> ModelSpec:
        """``spec`` with its ``devices`` resolved where its workers run (a cluster's GPUs, not this host's); what
        `Serve` then loads into the fronts and `start` s. `StartupError` when they are not there."""
        ...

    def start(self, spec: ModelSpec, fn: Any) -> Any:
        """Start the workers of a model version (``fn``: a function, a class, or a list of them)."""
        ...

    def group(self, name: str, version: int) -> Any | None:
        """The workers of a model version, if any were started."""
        ...

    def stop_group(self, name: str, version: int) -> None:
        """Stop a model version's workers."""
        ...

    def identities(self) -> list[str]:
        """The identities of the live workers (a restarted front asks each of them to say hello again)."""
        ...

    def close(self) -> None:
        """Stop every worker; idempotent."""
        ...


@runtime_checkable
class Backend(Protocol):
    """Where a `Serve`'s workers run, when not in this host's processes."""

    def open(self) -> FrontNetwork:
        """Connect (to the cluster); where the fronts must listen for workers on other hosts."""
        ...

    def front_replicas(self, site: FrontSite) -> FrontReplicas:
        """Start the front replicas on the backend's other hosts (none: a `FrontReplicas` without members)."""
        ...

    def workers(self, site: WorkerSite, notify: Notify, fronts: FrontCalls) -> WorkerPool:
        """The pool that starts, watches and restarts the workers; ``notify`` tells the fronts one is gone, and
        ``fronts`` gives the queues (autoscaling) and the workers to kill, and drains workers (scaling down)."""
        ...

    def close(self) -> None:
        """Disconnect (what `open` connected); idempotent."""
        ...
