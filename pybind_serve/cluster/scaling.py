"""`Sampler`: the `ActorPool`'s second thread; every `SAMPLE_S` it looks at the fronts and acts on what they say.

One look is one ``queues`` call to every front (`FrontCalls.sample`): each model version's queue (requests queued,
busy workers, how long the oldest request has waited) and the workers that passed their model's
``execution_timeout_s``. The fronts are asked only while some model autoscales or has an ``execution_timeout_s``.

- **A worker that overran** its ``execution_timeout_s``: its front failed the batch (`ExecutionTimeoutError`, the
  instance killed and replaced) and forgot it at once. `ActorPool.kill_overran` kills the actor (``ray.kill``),
  tells every front it is gone (a batch another front had sent it fails; none runs again: a batch that hangs may
  hang again), and starts a replacement under a new identity, as for an actor that died.
- **A model with** ``autoscale``: its `Scaler` decides from its `QueueSample` (`ActorPool.resize`). Up: new
  actors are started (Ray places them, or holds them pending until resources free up). Down: the newest actor
  leaves the pool, is drained on every front (no new batch goes to it, its batches in flight are answered), then
  stopped; a front keeps a model's last worker, and then the actor goes back to the pool (`ActorPool.put_back`).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from ..autoscale import SAMPLE_S
from ..backend import FrontCalls, QueueSample
from ..supervisor import STOP_GRACE_S

if TYPE_CHECKING:
    from .pool import ActorPool, _Group

__all__ = ["DRAIN_S", "Sampler"]

log = logging.getLogger("pybind_serve")

DRAIN_S = 30.0  # how long a drained actor's batches in flight are waited for, when its model has no execution timeout


class Sampler:
    """The pool's sampling thread: `start`, then `join` once the pool's ``stopping`` event is set."""

    def __init__(self, pool: ActorPool, fronts: FrontCalls, stopping: threading.Event) -> None:
        self._pool, self._fronts, self._stopping = pool, fronts, stopping
        self._thread = threading.Thread(target=self._run, name="pybind_serve-autoscale", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout_s: float) -> None:
        if self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stopping.wait(SAMPLE_S):
            try:
                self.look()
            except Exception:  # a bug of ours: keep looking
                log.exception("the pool's look at the fronts failed")

    def look(self) -> None:
        """One look at the fronts, and what it calls for."""
        groups = self._pool.sampled()
        if not groups:
            return
        try:
            sample = self._fronts.sample()
        except Exception as exc:  # a front restarting, or the server stopping: look again later
            log.debug("could not read the queues: %s", exc)
            return
        for identity in sorted(sample.overran):
            self._pool.kill_overran(identity)
        for group in groups:
            if group.scaler is not None:
                self._scale(group, sample.queues.get((group.spec.name, group.spec.version), QueueSample()))

    def _scale(self, group: _Group, queue: QueueSample) -> None:
        """The group's `Scaler` decision for this look, carried out."""
        scaler, label = group.scaler, group.spec.label
        assert scaler is not None

        def decide(instances: int) -> int:
            busy = min(queue.busy, instances)
            delta = scaler.decide(time.monotonic(), instances, queue.queued, busy, queue.waited_s)
            if delta > 0:
                log.info(
                    "%s: %d queued (the oldest for %.3g s) on %d instances: starting %d more",
                    *(label, queue.queued, queue.waited_s, instances, delta),
                )
            return delta

        retiring = self._pool.resize(group, decide)
        if retiring is None:
            return
        drain_s = group.spec.config.execution_timeout_s or DRAIN_S
        if not self._fronts.drain(retiring.identity, drain_s) and self._pool.put_back(group, retiring):
            return  # a front had no other worker for the model: it stays
        log.info("%s: idle: %s drained and stopped (%d left)", label, retiring.identity, len(group.actors))
        self._pool.stop_actors([retiring], STOP_GRACE_S)
