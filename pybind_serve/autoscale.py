"""`Autoscale`: a model's instance count between a minimum and a maximum, following its queue
(``ModelConfig(autoscale=...)``), and `Scaler`, the decision taken at each look at the queue (pure: no clock, no I/O).

The signals, sampled every `SAMPLE_S` seconds from every front: the requests queued for the model version (summed
over the fronts), how long the oldest of them has waited (the longest over the fronts), and its busy instances
(those with a batch in flight at that instant).

- **Up**: once the queue has been *crowded* at every sample for ``up_after_s``, instances are started: crowded is
  more than ``queue_per_instance`` requests per instance queued, or (with ``queue_time_s``) an oldest request that
  has waited longer than ``queue_time_s``. As many start as the queue depth seen needs
  (``ceil(queued / queue_per_instance)``), and at least one (a queue that is only old says *that* more are needed,
  not how many), at most up to ``max_instances``. The window starts again from there, so the new instances get
  time to start (and a queue that stays old adds one more per ``up_after_s``).
- **Down**: once the queue has been empty and at least one instance idle at every sample for ``down_after_s``,
  one instance is removed (drained first: it finishes its batches in flight and takes no new one), down to
  ``min_instances``; the window starts again.

>>> policy = Autoscale(min_instances=1, max_instances=4, queue_per_instance=2, up_after_s=1.0, down_after_s=5.0)
>>> scaler = Scaler(policy)
>>> [scaler.decide(t, instances=1, queued=9, busy=1) for t in (0.0, 0.5, 1.0)]
[0, 0, 3]
>>> [scaler.decide(t, instances=4, queued=0, busy=1) for t in (2.0, 4.0, 7.0)]
[0, 0, -1]
>>> timed = Scaler(Autoscale(max_instances=4, queue_per_instance=8, up_after_s=1.0, queue_time_s=0.2))
>>> [timed.decide(t, instances=1, queued=2, busy=1, waited_s=0.5) for t in (0.0, 0.5, 1.0)]  # few, but old
[0, 0, 1]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import ConfigurationError

__all__ = ["SAMPLE_S", "Autoscale", "Scaler"]

SAMPLE_S = 0.5  # how often the queue is looked at


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _seconds(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < math.inf


@dataclass(frozen=True)
class Autoscale:
    """How many instances a model runs, between ``min_instances`` and ``max_instances``, following its queue: up when
    more than ``queue_per_instance`` requests per instance stayed queued for ``up_after_s`` (as many as that queue
    needs), or, with ``queue_time_s``, when the oldest queued request had waited longer than ``queue_time_s`` at
    every look for ``up_after_s`` (at least one more); down by one when the queue stayed empty with an instance idle
    for ``down_after_s``. A cluster backend's (`RayBackend`) only."""

    min_instances: int = 1
    max_instances: int = 4
    queue_per_instance: float = 4.0
    up_after_s: float = 1.0
    down_after_s: float = 30.0
    queue_time_s: float | None = None  # None: the queue depth is the only signal up

    def __post_init__(self) -> None:
        problems = []
        for name in ("min_instances", "max_instances"):
            if not _count(getattr(self, name)):
                problems.append(f"{name} must be an int >= 1, got {getattr(self, name)!r}")
        if not problems and self.min_instances > self.max_instances:
            problems.append(
                f"min_instances ({self.min_instances}) must not exceed max_instances ({self.max_instances})"
            )
        if not _seconds(self.queue_per_instance) or not self.queue_per_instance > 0:
            problems.append(f"queue_per_instance must be a number > 0, got {self.queue_per_instance!r}")
        for name in ("up_after_s", "down_after_s"):
            if not _seconds(getattr(self, name)):
                problems.append(f"{name} must be a number of seconds >= 0, got {getattr(self, name)!r}")
        if self.queue_time_s is not None and not (_seconds(self.queue_time_s) and self.queue_time_s > 0):
            problems.append(f"queue_time_s must be None or a number of seconds > 0, got {self.queue_time_s!r}")
        if problems:
            raise ConfigurationError.collect("Autoscale", problems)


class Scaler:
    """The decisions for one model version: `decide` at each sample."""

    def __init__(self, policy: Autoscale) -> None:
        self.policy = policy
        self._crowded_since: float | None = None  # the queue has been too deep or too old since then
        self._idle_since: float | None = None  # the queue has been empty with an instance idle since then

    def decide(self, now: float, instances: int, queued: int, busy: int, waited_s: float = 0.0) -> int:
        """How many instances to add (> 0) or remove (< 0) now, given a sample: the ``instances`` running or
        starting, the requests ``queued`` for the model, the ``busy`` instances, and how long the oldest queued
        request has waited (``waited_s``; 0 when none is queued)."""
        policy = self.policy
        if instances < policy.min_instances:
            return policy.min_instances - instances
        if instances > policy.max_instances:
            return policy.max_instances - instances
        deep = queued > policy.queue_per_instance * instances
        old = policy.queue_time_s is not None and queued > 0 and waited_s > policy.queue_time_s
        if deep or old:
            self._idle_since = None
            if self._crowded_since is None:
                self._crowded_since = now
            if now - self._crowded_since >= policy.up_after_s and instances < policy.max_instances:
                self._crowded_since = now
                wanted = min(policy.max_instances, math.ceil(queued / policy.queue_per_instance))
                return max(wanted - instances, 1)
            return 0
        self._crowded_since = None
        if queued == 0 and busy < instances:
            if self._idle_since is None:
                self._idle_since = now
            if now - self._idle_since >= policy.down_after_s and instances > policy.min_instances:
                self._idle_since = now
                return -1
            return 0
        self._idle_since = None
        return 0
