"""The dynamic batcher: batch forming, delay, preferred sizes, priorities, queue policy, cancel, close.

Every scenario runs on a fresh event loop, the standard one and uvloop (what the front runs on). Timing
checks leave generous margins for a loaded machine: "not before the deadline" (less 2 ms: uvloop timers
have millisecond resolution) and "within the deadline + 0.5 s".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from pybind_serve.config import DynamicBatcher, ModelConfig, QueuePolicy, TimeoutAction
from pybind_serve.errors import BatchTooLargeError, InferenceTimeoutError, QueueFullError, UnavailableError
from pybind_serve.scheduler import Pending, Scheduler

LABEL = "model 'm' v1"
EARLY_S = 0.002  # how early a millisecond timer may fire
LATE_S = 0.5  # how late a loaded machine may run a timer

Runner = Callable[[Coroutine[Any, Any, Any]], Any]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner:
    if request.param == "asyncio":
        return asyncio.run
    uvloop = pytest.importorskip("uvloop")
    return uvloop.run


def scheduler(max_batch_size: int = 8, batching: bool = True, **batcher: Any) -> Scheduler:
    config = ModelConfig(batching=batching, max_batch_size=max_batch_size, batcher=DynamicBatcher(**batcher))
    return Scheduler(LABEL, config)


def submit_all(s: Scheduler, names: str, rows: int = 1, key: Any = "k", **kwargs: Any) -> list[Pending]:
    return [s.submit(name, rows=rows, key=key, **kwargs) for name in names]


async def take(s: Scheduler) -> str:
    """The payloads of the next batch, joined: "abc"."""
    return "".join(p.payload for p in await s.next_batch())


async def take_all(s: Scheduler) -> list[str]:
    batches = []
    while s.pending_count:
        batches.append(await take(s))
    return batches


async def soon(awaitable: Any, timeout_s: float = 5.0) -> Any:
    return await asyncio.wait_for(awaitable, timeout_s)


# --- forming batches --------------------------------------------------------------------------------


def test_without_delay_a_batch_is_everything_queued(run: Runner) -> None:
    async def scenario() -> None:
        s = scheduler()
        submit_all(s, "abc")
        assert s.pending_count == 3
        assert await soon(take(s)) == "abc"
        assert s.pending_count == 0

    run(scenario())


def test_max_batch_size_cuts_the_batch_and_the_rest_goes_next(run: Runner) -> None:
    async def scenario() -> None:
        s = scheduler(max_batch_size=4)
        submit_all(s, "abcdef")
        assert await soon(take_all(s)) == ["abcd", "ef"]

    run(scenario())


def test_rows_of_each_request_count_toward_max_batch_size(run: Runner) -> None:
    async def scenario() -> None:
        s = scheduler(max_batch_size=4)
        for name, rows in zip("abcde", [2, 1, 2, 3, 1], strict=True):
            s.submit(name, rows=rows, key="k")
        # c (2 rows) does not fit after a+b (3): it waits, and nothing behind it jumps the queue.
        assert await soon(take_all(s)) == ["ab", "c", "de"]

    run(scenario())


def test_different_key_cuts_the_batch_without_reordering(run: Runner) -> None:
    async def scenario() -> None:
        s = scheduler()
        for name, key in zip("abcde", ["x", "x", "y", "x", "x"], strict=True):
            s.submit(name, rows=1, key=key)
        assert await soon(take_all(s)) == ["ab", "c", "de"]

    run(scenario())


def test_batching_disabled_sends_one_request_per_batch_in_order(run: Runner) -> None:
    async def scenario() -> None:
        s = scheduler(batching=False, max_queue_delay_us=10_000_000, priority_levels=2)
        submit_all(s, "ab", priority=2)
        s.submit("c", rows=1, key="k", priority=1)
        s.submit("d", rows=50, key="other")  # rows are not checked: the model does not batch
        assert await soon(take_all(s)) == ["c", "a", "b", "d"]

    run(scenario())


# --- delay and preferred sizes -------------------------------------------------------------------------


def test_delay_waits_for_more_requests_then_sends(run: Runner) -> None:
    async def scenario() -> None:
        s = scheduler(max_queue_delay_us=200_000)
        start = time.monotonic()
        s.submit("a", rows=1, key="k")
        batch = asyncio.ensure_future(take(s))
        await asyncio.sleep(0.05)
        assert not batch.done()
        s.submit("b", rows=1, key="k")  # joins the waiting batch
        assert await soon(batch) == "ab"
        assert 0.2 - EARLY_S <= time.monotonic() - start <= 0.2 + LATE_S

    run(scenario())


def test_delay_counts_from_the_oldest_request(run: Runner) -> None:
    async def scenario() -> None:
        s = scheduler(max_queue_delay_us=200_000)
        start = time.monotonic()
        s.submit("a", rows=1, key="k")
        await asyncio.sleep(0.15)
        s.submit("b", rows=1, key="k")
        assert await soon(take(s)) == "ab"
        assert 0.2 - EARLY_S <= time.monotonic() - start <= 0.2 + LATE_S

    run(scenario())


def test_reaching_max_batch_size_sends_before_the_delay(run: Runner) -> None:
    async def scenario() -> None:
        s = scheduler(max_batch_size=4, max_queue_delay_us=10_000_000)
        batch = asyncio.ensure_future(take(s))
        submit_all(s, "abc")
        await asyncio.sleep(0.05)
        assert not batch.done()
        s.submit("d", rows=1, key="k")
        assert await soon(batch, 2.0) == "abcd"

    run(scenario())


def test_a_batch_that_cannot_grow_is_sent_before_the_delay(run: Runner) -> None:
    async def scenario() -> None:
        s = scheduler(max_batch_size=4, max_queue_delay_us=10_000_000)
        s.submit("a", rows=3, key="k")
        s.submit("b", rows=2, key="k")  # does not fit: a's batch is as large as it can get
        assert await soon(take(s), 2.0) == "a"
        s.submit("c", rows=1, key="k")
        s.submit("d", rows=1, key="other")  # another key: b+c cannot grow either
        assert await soon(take(s), 2.0) == "bc"
        assert s.pending_count == 1

    run(scenario())


def test_a_preferred_size_is_sent_before_the_delay(run: Runner) -> None:
    async def scenario() -> None:
        s = scheduler(max_batch_size=8, max_queue_delay_us=10_000_000, preferred_batch_sizes=(2, 4))
        submit_all(s, "abc")
        assert await soon(take(s), 2.0) == "ab"  # 2 is preferred: sent at once, c waits for company
        batch = asyncio.ensure_future(take(s))
        await asyncio.sleep(0.05)
        assert not batch.done()
        submit_all(s, "def")
        assert await soon(batch, 2.0) == "cdef"  # the largest preferred size

    run(scenario())


def test_preferred_sizes_cut_the_batch_without_delay(run: Runner) -> None:
    async def scenario() -> None:
        s = scheduler(max_batch_size=8, preferred_batch_sizes=(2, 4))
        submit_all(s, "abcdefg")
        # 4 of 7, then 2 of 3; the last one matches no preferred size and goes as it is.
        assert await soon(take_all(s)) == ["abcd", "ef", "g"]

    run(scenario())


def test_overshooting_the_largest_preferred_size_cuts_before_it(run: Runner) -> None:
    async def scenario() -> None:
        s = scheduler(max_batch_size=8, max_queue_delay_us=10_000_000, preferred_batch_sizes=(4,))
        s.submit("a", rows=3, key="k")
        s.submit("b", rows=3, key="k")  # 3 + 3 > 4: a alone is as close to 4 as it gets
        assert await soon(take(s), 2.0) == "a"
        assert s.pending_count == 1

    run(scenario())


def test_after_the_delay_the_whole_batch_goes_even_past_preferred_sizes(run: Runner) -> None:
    async def scenario() -> None:
        s = scheduler(max_batch_size=8, max_queue_delay_us=150_000, preferred_batch_sizes=(4,))
        start = time.monotonic()
        submit_all(s, "abc")
        assert await soon(take(s)) == "abc"  # no preferred size reached: sent when the delay expires
        assert 0.15 - EARLY_S <= time.monotonic() - start <= 0.15 + LATE_S

    run(scenario())


# --- priorities and queue policy ---------------------------------------------------------------------


def test_priority_levels_go_highest_first_with_default_and_clamping(run: Runner) -> None:
    async def scenario() -> None:
        s = scheduler(batching=False, priority_levels=3, default_priority_level=2)
        a = s.submit("a", rows=1, key="k", priority=3)
        b = s.submit("b", rows=1, key="k")  # default level: 2
        c = s.submit("c", rows=1, key="k", priority=99)  # clamped to the lowest level, 3
        d = s.submit("d", rows=1, key="k", priority=1)
        assert [p.level for p in (a, b, c, d)] == [3, 2, 3, 1]
        assert await soon(take_all(s)) == ["d", "b", "a", "c"]

    run(scenario())


def test_a_batch_spans_levels_in_priority_order(run: Runner) -> None:
    async def scenario() -> None:
        s = scheduler(max_batch_size=3, priority_levels=2)  # default level: the lowest, 2
        submit_all(s, "ab")
        submit_all(s, "cd", priority=1)
        assert await soon(take_all(s)) == ["cda", "b"]

    run(scenario())


def test_queue_full_is_per_level_and_counts_only_queued_requests(run: Runner) -> None:
    async def scenario() -> None:
        policy = QueuePolicy(max_queue_size=2)
        s = scheduler(priority_levels=2, priority_queue_policies={1: policy})
        first, _ = submit_all(s, "ab", priority=1)
        with pytest.raises(QueueFullError, match="Exceeds maximum queue size") as info:
            s.submit("c", rows=1, key="k", priority=1)
        assert LABEL in str(info.value) and "max_queue_size 2" in str(info.value)
        submit_all(s, "xyz", priority=2)  # level 2 is unbounded
        first.cancel()  # a cancelled request frees its place
        s.submit("c", rows=1, key="k", priority=1)
        assert await soon(take(s)) == "bcxyz"
        submit_all(s, "de", priority=1)  # dispatched requests free their places too
        assert s.pending_count == 2

    run(scenario())


def test_rows_above_max_batch_size_are_rejected_at_submit(run: Runner) -> None:
    async def scenario() -> None:
        s = scheduler(max_batch_size=4)
        with pytest.raises(BatchTooLargeError, match=r"model 'm' v1: batch size must be <= max_batch_size 4, got 5"):
            s.submit("a", rows=5, key="k")
        assert s.pending_count == 0
        s.submit("b", rows=4, key="k")
        assert await soon(take(s)) == "b"

    run(scenario())


# --- timeouts ------------------------------------------------------------------------------------------


def test_reject_timeout_fails_the_request_without_any_next_batch_call(run: Runner) -> None:
    async def scenario() -> None:
        s = scheduler(default_queue_policy=QueuePolicy(default_timeout_us=100_000))
        start = time.monotonic()
        pending = s.submit("a", rows=1, key="k")
        with pytest.raises(InferenceTimeoutError, match=r"^Request timeout expired: model 'm' v1"):
            await soon(pending.future)
        assert 0.1 - EARLY_S <= time.monotonic() - start <= 0.1 + LATE_S
        assert s.pending_count == 0 and not pending.queued

    run(scenario())


def test_timed_out_request_leaves_the_batch_being_formed(run: Runner) -> None:
    async def scenario() -> None:
        s = scheduler(max_queue_delay_us=300_000)
        doomed = s.submit("a", rows=1, key="k", timeout_us=50_000)
        batch = asyncio.ensure_future(take(s))
        with pytest.raises(InferenceTimeoutError):
            await soon(doomed.future)
        s.submit("b", rows=1, key="k")
        assert await soon(batch) == "b"

    run(scenario())


def test_request_timeout_applies_when_override_is_allowed(run: Runner) -> None:
    async def scenario() -> None:
        s = scheduler()  # default policy: no timeout, override allowed
        start = time.monotonic()
        pending = s.submit("a", rows=1, key="k", timeout_us=50_000)
        with pytest.raises(InferenceTimeoutError):
            await soon(pending.future)
        assert 0.05 - EARLY_S <= time.monotonic() - start <= 0.05 + LATE_S

    run(scenario())


def test_request_timeout_is_ignored_when_override_is_not_allowed(run: Runner) -> None:
    async def scenario() -> None:
        s = scheduler(default_queue_policy=QueuePolicy(allow_timeout_override=False))
        pending = s.submit("a", rows=1, key="k", timeout_us=20_000)
        assert pending.deadline is None
        await asyncio.sleep(0.15)
        assert not pending.future.done() and s.pending_count == 1
        assert await soon(take(s)) == "a"

    run(scenario())


def test_delay_timeout_moves_the_request_behind_its_level(run: Runner) -> None:
    async def scenario() -> None:
        policy = QueuePolicy(timeout_action=TimeoutAction.DELAY, default_timeout_us=50_000)
        s = scheduler(batching=False, priority_levels=2, default_queue_policy=policy)
        a = s.submit("a", rows=1, key="k", priority=1)
        await asyncio.sleep(0.15)  # a's timeout expired: it is delayed, not failed
        assert not a.future.done() and a.queued and s.pending_count == 1
        submit_all(s, "bc", priority=1)
        s.submit("d", rows=1, key="k", priority=2)
        # behind the level-1 requests that have not timed out, still ahead of the lower level
        assert await soon(take_all(s)) == ["b", "c", "a", "d"]

    run(scenario())


def test_the_oldest_queued_request_s_wait_over_levels_cancels_and_requeues(run: Runner) -> None:
    """`oldest_wait_s` (the autoscaling signal `Autoscale.queue_time_s`): from the request queued longest, on any
    level, whatever left the queue out of order; a request put back keeps its wait; 0 once none is queued."""

    async def scenario() -> None:
        s = scheduler(max_batch_size=1, priority_levels=2)
        assert s.oldest_wait_s(time.monotonic()) == 0.0
        a = s.submit("a", rows=1, key="k", priority=2)
        b, _ = submit_all(s, "bc", priority=1)
        later = a.enqueued + 3.0
        assert s.oldest_wait_s(later) == pytest.approx(3.0)  # the lower level's request came first
        assert s.oldest_wait_s(a.enqueued - 1.0) == 0.0  # never negative
        b.cancel()
        assert await soon(take(s)) == "c"
        assert s.oldest_wait_s(later) == pytest.approx(3.0)
        batch = await soon(s.next_batch())
        assert [p.payload for p in batch] == ["a"] and s.oldest_wait_s(later) == 0.0
        s.requeue(batch)  # its worker was lost: it waits again, from when it first came
        assert s.oldest_wait_s(later) == pytest.approx(3.0)
        d = s.submit("d", rows=1, key="k", priority=1)
        assert s.oldest_wait_s(d.enqueued + 1.0) == pytest.approx(d.enqueued + 1.0 - a.enqueued)

    run(scenario())


# --- cancel, concurrency, close --------------------------------------------------------------------------


def test_cancelled_requests_are_skipped_and_not_counted(run: Runner) -> None:
    async def scenario() -> None:
        s = scheduler(max_batch_size=2)
        _, b, c, _ = submit_all(s, "abcd")
        b.cancel()
        assert b.future.cancelled() and not b.queued and s.pending_count == 3
        b.cancel()  # idempotent
        assert s.pending_count == 3
        assert await soon(take(s)) == "ac"  # b takes no room in the batch
        c.cancel()  # already dispatched: only the future is cancelled
        assert s.pending_count == 1 and c.future.cancelled()
        assert await soon(take(s)) == "d"

    run(scenario())


def test_a_cancelled_awaiting_task_cancels_the_request(run: Runner) -> None:
    async def scenario() -> None:
        s = scheduler()
        a, _ = submit_all(s, "ab")
        waiter = asyncio.ensure_future(a.future)  # how the front awaits; a client disconnect cancels it
        await asyncio.sleep(0)
        waiter.cancel()
        await asyncio.sleep(0.01)
        assert a.future.cancelled() and s.pending_count == 1
        assert await soon(take(s)) == "b"

    run(scenario())


def test_many_cancellations_keep_the_queue_compact(run: Runner) -> None:
    async def scenario() -> None:
        s = scheduler(max_batch_size=4)
        _, *rest = [s.submit(i, rows=1, key="k") for i in range(2_000)]
        for pending in rest:
            pending.cancel()
        assert s.pending_count == 1
        assert len(s._levels[0].queue) < 100  # stale entries were dropped, not kept behind the first
        assert [p.payload for p in await soon(s.next_batch())] == [0]

    run(scenario())


def test_concurrent_next_batch_callers_get_disjoint_batches(run: Runner) -> None:
    async def scenario() -> None:
        s = scheduler(max_batch_size=2, max_queue_delay_us=20_000)
        callers = [asyncio.ensure_future(s.next_batch()) for _ in range(4)]
        await asyncio.sleep(0.01)
        pendings = [s.submit(i, rows=1, key="k") for i in range(7)]
        batches = await soon(asyncio.gather(*callers))
        taken = [p.payload for batch in batches for p in batch]
        assert all(1 <= len(batch) <= 2 for batch in batches)
        assert sorted(taken) == list(range(7))  # each request exactly once
        assert s.pending_count == 0 and all(not p.queued for p in pendings)

    run(scenario())


def test_a_waiting_next_batch_wakes_up_on_submit(run: Runner) -> None:
    async def scenario() -> None:
        s = scheduler()
        batch = asyncio.ensure_future(take(s))
        await asyncio.sleep(0.05)
        assert not batch.done()
        s.submit("a", rows=1, key="k")
        assert await soon(batch, 2.0) == "a"

    run(scenario())


def test_close_fails_queued_requests_and_every_next_batch_call(run: Runner) -> None:
    async def scenario() -> None:
        s = scheduler(max_queue_delay_us=10_000_000)
        pendings = submit_all(s, "ab")
        forming = asyncio.ensure_future(s.next_batch())  # waiting for the delay
        queued = asyncio.ensure_future(s.next_batch())  # waiting for its turn
        await asyncio.sleep(0.01)
        error = UnavailableError(f"{LABEL} is stopping")
        s.close(error)
        for awaitable in [*(p.future for p in pendings), forming, queued, s.next_batch()]:
            with pytest.raises(UnavailableError, match="is stopping"):
                await soon(awaitable)
        with pytest.raises(UnavailableError, match="is stopping"):
            s.submit("c", rows=1, key="k")
        assert s.pending_count == 0
        s.close(RuntimeError("second close"))  # idempotent: the first error stays
        with pytest.raises(UnavailableError):
            await soon(s.next_batch())

    run(scenario())


def test_fail_queued_fails_what_waits_and_the_queue_goes_on(run: Runner) -> None:
    async def scenario() -> None:
        s = scheduler(max_batch_size=4, priority_levels=2, max_queue_delay_us=10_000_000)
        taken = submit_all(s, "abcd")
        assert await soon(take(s)) == "abcd"  # dispatched: fail_queued leaves these to the dispatcher
        waiting = submit_all(s, "ef") + submit_all(s, "g", priority=1)
        forming = asyncio.ensure_future(s.next_batch())  # waits for the queue delay
        await asyncio.sleep(0.01)
        assert s.fail_queued(UnavailableError("no worker is left")) == 3
        for pending in waiting:
            with pytest.raises(UnavailableError, match="no worker is left"):
                await soon(pending.future)
        assert s.pending_count == 0 and not any(p.future.done() for p in taken)
        await asyncio.sleep(0.01)
        assert not forming.done()  # a worker waiting for the next batch still waits: the queue is open
        submit_all(s, "hijk")
        assert [p.payload for p in await soon(forming)] == list("hijk")
        for pending in taken:
            pending.future.cancel()

    run(scenario())


def test_close_leaves_finished_futures_alone(run: Runner) -> None:
    async def scenario() -> None:
        s = scheduler()
        a, b = submit_all(s, "ab")
        assert await soon(take(s)) == "ab"
        a.future.set_result("done")  # what the dispatcher does
        c = s.submit("c", rows=1, key="k")
        s.close(UnavailableError("stopping"))
        assert a.future.result() == "done" and not b.future.done()
        with pytest.raises(UnavailableError):
            await c.future
        b.future.cancel()

    run(scenario())


def test_a_burst_is_served_in_full_batches(run: Runner) -> None:
    async def scenario() -> list[int]:
        s = scheduler(max_batch_size=64)
        for i in range(1_000):
            s.submit(i, rows=1, key="k")
        sizes = []
        while sum(sizes) < 1_000:
            sizes.append(len(await s.next_batch()))
        return sizes

    # Speed belongs to benchmarks/; here: a queued burst leaves in max-size batches, in order.
    assert run(scenario()) == [64] * 15 + [40]


# --- take_ready: the batch a busy worker gets as soon as it is free ----------------------------------------


def test_take_ready_takes_what_next_batch_would_give_at_once(run: Runner) -> None:
    async def scenario() -> None:
        s = scheduler(max_batch_size=2)
        assert s.take_ready() == []
        submit_all(s, "abc")
        assert "".join(p.payload for p in s.take_ready()) == "ab"
        assert s.pending_count == 1
        assert await soon(take(s)) == "c"

    run(scenario())


def test_take_ready_waits_out_the_queue_delay_as_next_batch_does(run: Runner) -> None:
    async def scenario() -> None:
        s = scheduler(max_batch_size=4, max_queue_delay_us=10_000_000)
        submit_all(s, "ab")
        assert s.take_ready() == []  # the batch could still grow within its delay
        submit_all(s, "cd")
        assert "".join(p.payload for p in s.take_ready()) == "abcd"  # full: no reason to wait

    run(scenario())


def test_take_ready_leaves_the_batch_to_a_caller_waiting_for_one(run: Runner) -> None:
    async def scenario() -> None:
        s = scheduler()
        waiting = asyncio.ensure_future(take(s))  # an idle worker of the same model
        await asyncio.sleep(0)
        submit_all(s, "ab")
        assert s.take_ready() == []
        assert await soon(waiting) == "ab"

    run(scenario())


def test_take_ready_on_a_closed_scheduler_takes_nothing(run: Runner) -> None:
    async def scenario() -> None:
        s = scheduler()
        submit_all(s, "a")
        s.close(UnavailableError("stopping"))
        assert s.take_ready() == []

    run(scenario())
