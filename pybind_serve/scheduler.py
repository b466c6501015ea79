"""Dynamic batching: one `Scheduler` per model version groups queued requests into batches as Triton does.

The front `submit`s each request and awaits its `Pending.future`; a dispatcher loop per worker calls
`next_batch`, sends the batch to the worker and sets each future's result. Scheduling order is priority
level 1 first, FIFO inside a level, and a level's requests whose timeout expired with action DELAY after the
level's other requests (as Triton: behind the requests of the same or higher levels that have not timed out).

The batch rule follows Triton's ``DynamicBatchScheduler::GetDynamicBatch``. Take requests in scheduling
order while they share the first one's ``key`` and fit in ``max_batch_size`` rows; then

- unless ``max_queue_delay_us`` has passed for its oldest request, a prefix summing to a preferred batch
  size (none configured: ``max_batch_size``) is sent at once, cut at the largest such size; the prefix before
  a request that would overshoot the largest preferred size counts as one too;
- else the whole candidate is sent at once if it cannot grow (the next request has another key or would not
  fit), if it reached the largest preferred size, or if the delay is 0 or has passed;
- else it waits until a request arrives or leaves (then decides again) or until the delay has passed.

Timeouts and cancellations take effect at once (timers, not polling), so a client never waits past its
timeout for a worker to become free.
"""

from __future__ import annotations

import asyncio
import enum
import math
import time
from collections import deque
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from .config import ModelConfig, QueuePolicy, TimeoutAction
from .errors import BatchTooLargeError, InferenceTimeoutError, QueueFullError

__all__ = ["Pending", "Scheduler"]

P = TypeVar("P")  # what the front queues per request (its `Job`)

# More queue entries than this beyond twice the live ones, and a level's deques are rebuilt without the
# entries that left out of order (cancelled, timed out): keeps memory and scans bounded when workers stall.
_COMPACT_SLACK = 64


class _State(enum.Enum):
    QUEUED = "queued"  # in its level's main queue
    DELAYED = "delayed"  # its timeout expired with action DELAY: in its level's delayed tail
    DONE = "done"  # left the queue: dispatched, cancelled, timed out or failed by close()


@dataclass(slots=True, eq=False)
class Pending(Generic[P]):
    """One queued request, made by `Scheduler.submit`.

    ``future`` is what the front awaits: the dispatcher sets its result, the scheduler fails it (timeout,
    `Scheduler.close`). Cancelling the future (or calling `cancel`) takes the request out of the queue.
    """

    payload: P
    rows: int
    key: Hashable
    level: int
    enqueued: float
    deadline: float | None
    future: asyncio.Future[Any]
    retries: int = field(default=0, init=False)  # times it was put back after its worker was lost (`requeue`)
    _scheduler: Scheduler | None = field(default=None, init=False, repr=False)
    _state: _State = field(default=_State.QUEUED, init=False, repr=False)
    _timer: asyncio.TimerHandle | None = field(default=None, init=False, repr=False)

    @property
    def queued(self) -> bool:
        """True until the request is dispatched, cancelled, timed out (REJECT) or failed."""
        return self._state is not _State.DONE

    def cancel(self) -> None:
        """The client went away: the request is never dispatched and its future is cancelled."""
        if self._state is not _State.DONE and self._scheduler is not None:
            self._scheduler._discard(self)
        self.future.cancel()

    def _future_done(self, future: asyncio.Future[Any]) -> None:
        # The front's task was cancelled while awaiting the future, which cancels the future too.
        if self._state is not _State.DONE and self._scheduler is not None:
            self._scheduler._discard(self)


class _Level(Generic[P]):
    """The queue of one priority level: a FIFO main queue, then the tail of requests delayed by a timeout.

    Requests that leave out of order stay in the deques, marked DONE (or DELAYED in the main queue), and are
    skipped; they are dropped when they reach the front or when `trim` compacts. ``count`` is exact.
    """

    __slots__ = ("count", "delayed", "policy", "queue")

    def __init__(self, policy: QueuePolicy) -> None:
        self.policy = policy
        self.queue: deque[Pending[P]] = deque()
        self.delayed: deque[Pending[P]] = deque()
        self.count = 0

    def live(self) -> Iterator[Pending[P]]:
        """The level's queued requests in scheduling order."""
        for pending in self.queue:
            if pending._state is _State.QUEUED:
                yield pending
        for pending in self.delayed:
            if pending._state is _State.DELAYED:
                yield pending

    def oldest(self) -> float:
        """When the level's longest-queued request was queued (monotonic); infinity when none is. The main queue is
        in enqueue order (requests put back go to its head, and they were queued before the others) and so is the
        delayed tail: the first live entry of each."""
        first = next((p.enqueued for p in self.queue if p._state is _State.QUEUED), math.inf)
        delayed = next((p.enqueued for p in self.delayed if p._state is _State.DELAYED), math.inf)
        return min(first, delayed)

    def trim(self) -> None:
        """Drop entries that left the queue from the fronts; rebuild the deques when they pile up inside."""
        queue, delayed = self.queue, self.delayed
        while queue and queue[0]._state is not _State.QUEUED:
            queue.popleft()
        while delayed and delayed[0]._state is not _State.DELAYED:
            delayed.popleft()
        if len(queue) + len(delayed) > 2 * self.count + _COMPACT_SLACK:
            self.queue = deque(p for p in queue if p._state is _State.QUEUED)
            self.delayed = deque(p for p in delayed if p._state is _State.DELAYED)


class Scheduler(Generic[P]):
    """The dynamic batcher of one model version (asyncio, single event loop).

    >>> import asyncio
    >>> async def demo():
    ...     s = Scheduler("model 'add' v1", ModelConfig(max_batch_size=4))
    ...     first, second = s.submit("a", rows=1, key=()), s.submit("b", rows=2, key=())
    ...     batch = await s.next_batch()
    ...     return [p.payload for p in batch], s.pending_count
    >>> asyncio.run(demo())
    (['a', 'b'], 0)
    """

    def __init__(self, label: str, config: ModelConfig) -> None:
        batcher = config.batcher
        self.label = label
        self._batching = config.batching
        self._max_rows = config.max_batch_size
        self._batcher = batcher
        self._delay_s = batcher.max_queue_delay_us / 1e6
        # Triton's config normalisation makes max_batch_size the preferred size when none is given.
        self._preferred = frozenset(batcher.preferred_batch_sizes or (config.max_batch_size,))
        self._top_preferred = max(self._preferred)
        self._levels: list[_Level[P]] = [
            _Level(batcher.queue_policy(n)) for n in range(1, max(batcher.priority_levels, 1) + 1)
        ]
        self._count = 0
        self._error: Exception | None = None
        self._turn = asyncio.Lock()  # one next_batch call forms a batch at a time; the others wait in FIFO order
        self._wakeup: asyncio.Future[bool] | None = None  # the forming call's wakeup: True = its delay passed
        self._alarm: asyncio.TimerHandle | None = None  # ends the forming call's delay; kept while its end holds
        self._alarm_at: float | None = None

    @property
    def pending_count(self) -> int:
        """Requests queued and not yet dispatched (cancelled and timed-out ones excluded)."""
        return self._count

    def oldest_wait_s(self, now: float) -> float:
        """How long the request queued longest has waited at ``now`` (monotonic), in seconds; 0 when none is queued
        (the autoscaling signal `Autoscale.queue_time_s`)."""
        if not self._count:
            return 0.0
        oldest = min((level.oldest() for level in self._levels if level.count), default=math.inf)
        return max(now - oldest, 0.0) if oldest < math.inf else 0.0

    def submit(self, payload: P, rows: int, key: Hashable, priority: int = 0, timeout_us: int = 0) -> Pending[P]:
        """Queue a request of ``rows`` rows; only requests of equal ``key`` share a batch.

        ``priority`` 0 is the default level, others are clamped to ``1..priority_levels``; ``timeout_us`` 0
        means the level's default timeout. Raises `BatchTooLargeError`, `QueueFullError`, or the error
        given to `close`. Must be called from the event loop.
        """
        if self._error is not None:
            raise self._error
        if self._batching and rows > self._max_rows:
            raise BatchTooLargeError(f"{self.label}: batch size must be <= max_batch_size {self._max_rows}, got {rows}")
        level_no = self._batcher.level_of(priority)
        level = self._levels[level_no - 1]
        self._check_room(level, level_no)
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        timeout_s = level.policy.timeout_us(timeout_us) / 1e6
        pending = Pending(
            payload, rows, key, level_no, now, now + timeout_s if timeout_s else None, loop.create_future()
        )
        pending._scheduler = self
        if timeout_s:
            pending._timer = loop.call_later(timeout_s, self._expire, pending)
        pending.future.add_done_callback(pending._future_done)
        level.queue.append(pending)
        level.count += 1
        self._count += 1
        self._notify(False)
        return pending

    def requeue(self, batch: list[Pending[P]], retried: bool = True) -> None:
        """Put dispatched requests back at the head of their levels, in order: their worker was lost before it
        answered, and another is to run them (``retried``: each counts one more run in `Pending.retries`; False: the
        batch never reached its worker). Their queue timeouts are not armed again (they waited already)."""
        for pending in reversed(batch):
            if pending.future.done() or pending._state is not _State.DONE:
                continue
            if self._error is not None:
                pending.future.set_exception(self._error)
                continue
            pending._state = _State.QUEUED
            pending.retries += 1 if retried else 0
            level = self._levels[pending.level - 1]
            level.queue.appendleft(pending)
            level.count += 1
            self._count += 1
        self._notify(False)

    def _check_room(self, level: _Level[P], level_no: int) -> None:
        limit = level.policy.max_queue_size
        if limit and level.count >= limit:
            raise QueueFullError(
                f"Exceeds maximum queue size: {self.label} has {level.count} requests queued at priority level "
                f"{level_no} (max_queue_size {limit}); retry later"
            )

    async def next_batch(self) -> list[Pending[P]]:
        """Wait for and take the next batch (at least one request); concurrent callers get distinct batches.

        Raises the error given to `close`.
        """
        async with self._turn:
            delay_over = False
            try:
                while True:
                    if self._error is not None:
                        raise self._error
                    batch, wake_at = self._form_batch(delay_over)
                    if batch:
                        self._take(batch)
                        return batch
                    delay_over = await self._wait_for_change(wake_at)
            finally:
                self._set_alarm(None)

    def take_ready(self) -> list[Pending[P]]:
        """The batch `next_batch` would return at once, taken now; [] if it would wait, or if another caller
        is waiting in `next_batch` (an idle worker: the batch is its). Never raises."""
        if self._error is not None or self._turn.locked():
            return []
        batch, _ = self._form_batch(False)
        if batch:
            self._take(batch)
        return batch

    def close(self, error: Exception) -> None:
        """Fail every queued request and every waiting or later `next_batch` / `submit` with ``error``.

        Idempotent: the first error stays.
        """
        if self._error is not None:
            return
        self._error = error
        self.fail_queued(error)

    def fail_queued(self, error: Exception) -> int:
        """Fail the requests queued now with ``error`` (e.g. no worker is left to run them); later ones queue as
        usual. Returns how many failed."""
        failed = 0
        for level in self._levels:
            for pending in list(level.live()):
                self._leave(pending)
                if not pending.future.done():
                    pending.future.set_exception(error)
                    failed += 1
            level.queue.clear()
            level.delayed.clear()
        self._notify(False)
        return failed

    # --- forming batches -------------------------------------------------------------------------------

    def _live(self) -> Iterator[Pending[P]]:
        """Every queued request in scheduling order."""
        for level in self._levels:
            if level.count:
                yield from level.live()

    def _form_batch(self, delay_over: bool) -> tuple[list[Pending[P]], float | None]:
        """The batch to send now, or ``([], when)`` to wait until ``when`` (None: until a change)."""
        if not self._count:
            return [], None
        if not self._batching:
            return [next(self._live())], None
        batch, rows, best, full, oldest = self._candidate()
        delay_over = delay_over or (self._delay_s > 0 and time.monotonic() - oldest >= self._delay_s)
        if best and not delay_over:
            return batch[:best], None
        if full or rows >= self._top_preferred or self._delay_s == 0 or delay_over:
            return batch, None
        return [], oldest + self._delay_s

    def _candidate(self) -> tuple[list[Pending[P]], int, int, bool, float]:
        """The longest batch that could be sent now, scanning in scheduling order (Triton's cursor walk).

        Returns ``(batch, rows, best, full, oldest)``: ``best`` is the length of the prefix to cut at (a
        preferred size, or where the next request would overshoot the largest one; 0: none); ``full``: the
        batch cannot grow (the next request has another key or does not fit); ``oldest``: its oldest
        request's enqueue time.
        """
        batch: list[Pending[P]] = []
        rows = best = 0
        full = False
        key: Hashable = None
        oldest = float("inf")
        for pending in self._live():
            size = pending.rows or 1  # as Triton: a request without a batch dim counts as one row
            if batch:
                if rows + size > self._top_preferred and not best:
                    best = len(batch)
                if pending.key != key or rows + size > self._max_rows:
                    full = True
                    break
            else:
                key = pending.key
            batch.append(pending)
            rows += size
            oldest = min(oldest, pending.enqueued)
            if rows in self._preferred:
                best = len(batch)
        return batch, rows, best, full, oldest

    def _take(self, batch: list[Pending[P]]) -> None:
        for pending in batch:
            self._leave(pending)
        for level in self._levels:
            level.trim()

    # --- waking the forming call -------------------------------------------------------------------------

    async def _wait_for_change(self, wake_at: float | None) -> bool:
        """Sleep until a request arrives or leaves, the queue closes, or ``wake_at``; True if ``wake_at`` came.

        The caller trusts the timer over the clock: an event loop with millisecond timers (uvloop) may wake
        it a fraction of a millisecond early, and checking the clock again would spin until then.
        """
        self._set_alarm(wake_at)
        self._wakeup = wakeup = asyncio.get_running_loop().create_future()
        try:
            return await wakeup
        finally:
            self._wakeup = None

    def _set_alarm(self, wake_at: float | None) -> None:
        """Arm the delay timer for ``wake_at`` (None: disarm); a timer already set for it is kept, as most
        arrivals leave the oldest request, and so the end of the delay, unchanged."""
        if wake_at == self._alarm_at:
            return
        if self._alarm is not None:
            self._alarm.cancel()
            self._alarm = None
        self._alarm_at = wake_at
        if wake_at is not None:
            delay_s = max(wake_at - time.monotonic(), 0.0)
            self._alarm = asyncio.get_running_loop().call_later(delay_s, self._ring)

    def _ring(self) -> None:
        self._alarm = self._alarm_at = None
        self._notify(True)

    def _notify(self, delay_over: bool) -> None:
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(delay_over)

    # --- requests leaving the queue out of turn ------------------------------------------------------------

    def _leave(self, pending: Pending[P]) -> None:
        """Mark a queued request as gone and keep the counters exact."""
        pending._state = _State.DONE
        if pending._timer is not None:
            pending._timer.cancel()
            pending._timer = None
        self._levels[pending.level - 1].count -= 1
        self._count -= 1

    def _discard(self, pending: Pending[P]) -> None:
        """A queued request was cancelled."""
        self._leave(pending)
        self._levels[pending.level - 1].trim()
        self._notify(False)

    def _expire(self, pending: Pending[P]) -> None:
        """A queued request's timeout expired: reject it or move it to its level's delayed tail."""
        pending._timer = None
        if pending._state is not _State.QUEUED:
            return
        level = self._levels[pending.level - 1]
        if level.policy.timeout_action is TimeoutAction.DELAY:
            pending._state = _State.DELAYED
            level.delayed.append(pending)
        else:
            self._leave(pending)
            if not pending.future.done():
                pending.future.set_exception(self._timeout_error(pending))
        level.trim()
        self._notify(False)

    def _timeout_error(self, pending: Pending[P]) -> InferenceTimeoutError:
        timeout_us = round(((pending.deadline or pending.enqueued) - pending.enqueued) * 1e6)
        return InferenceTimeoutError(f"Request timeout expired: {self.label}: queued longer than {timeout_us} us")
