"""What a `Serve` asks of a worker backend: starting the bound models' workers somewhere other than this host's
processes (`Serve(backend=...)`; `pybind_serve.cluster.RayBackend` runs them as Ray actors).

The fronts stay where they are (processes of this host, started by `Serve`); a backend's workers reach them over
the fronts' ipc ROUTERs with shared memory when they share this host, and over their TCP ROUTERs (`WorkerSite`)
with the tensor bytes in the messages when they do not. Either way they speak the same frames as a local worker
(`transport.frames`), and the fronts batch, dispatch and answer as for any other worker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .fronts import Fronts
from .spec import ModelSpec
from .transport.network import FrontNetwork

__all__ = ["Backend", "FrontCalls", "Notify", "WorkerPool", "WorkerSite", "front_calls"]

# (worker identity, why it is gone, whether its batch in flight may run again elsewhere: it was lost through no
# fault of its own, e.g. with its node): the fronts fail that batch, or give it to another worker
Notify = Callable[[str, str, bool], None]


@dataclass(frozen=True)
class FrontCalls:
    """What a backend may ask of the fronts (from any thread): ``queues()``, each model version's queued requests
    and busy workers summed over the fronts (the autoscaling signal); ``drain(identity, timeout_s)``, take a worker
    out of service on every front once its batches in flight are answered (whether every front did: a front
    keeps its model's last worker)."""

    queues: Callable[[], dict[tuple[str, int], tuple[int, int]]]
    drain: Callable[[str, float], bool]


def front_calls(fronts: Fronts) -> FrontCalls:
    """`FrontCalls` over a `Serve`'s front processes."""

    def queues() -> dict[tuple[str, int], tuple[int, int]]:
        totals: dict[tuple[str, int], tuple[int, int]] = {}
        for reply in fronts.call("queues", 5.0):
            for name, version, queued, busy in reply["models"]:
                before = totals.get((name, version), (0, 0))
                totals[(name, version)] = (before[0] + queued, before[1] + busy)
        return totals

    def drain(identity: str, timeout_s: float) -> bool:
        replies = fronts.call("drain", timeout_s + 5.0, identity=identity, wait_s=timeout_s)
        return all(reply.get("drained") for reply in replies)

    return FrontCalls(queues, drain)


@dataclass(frozen=True)
class WorkerSite:
    """Where a backend's workers connect, and how their shared memory is named when they are on this host."""

    endpoints: tuple[str, ...]  # every front's ipc endpoint (this host)
    network_endpoints: tuple[str, ...]  # every front's TCP endpoint, in the same order
    network: FrontNetwork  # the fronts' address and keys (workers need only the public one)
    owner: str  # the server's shared-memory owner name
    idle_release_s: float


class WorkerPool(Protocol):
    """The workers of every bound model of one `Serve`, as `supervisor.Supervisor` keeps them on one host."""

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

    def workers(self, site: WorkerSite, notify: Notify, fronts: FrontCalls) -> WorkerPool:
        """The pool that starts, watches and restarts the workers; ``notify`` tells the fronts one is gone, and
        ``fronts`` gives the queues (autoscaling) and drains workers (scaling down)."""
        ...

    def close(self) -> None:
        """Disconnect (what `open` connected); idempotent."""
        ...
