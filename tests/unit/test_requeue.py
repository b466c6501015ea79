"""`Scheduler.requeue`: requests whose worker was lost with its node go back to the head of their queue, in order,
counted once more (not counted: a batch that never reached its worker), and are batched again before those that
came after them."""

from __future__ import annotations

import asyncio

from pybind_serve import ModelConfig
from pybind_serve.errors import UnavailableError
from pybind_serve.scheduler import Scheduler


def test_requeued_requests_come_first_in_their_order() -> None:
    async def run() -> tuple[list[str], list[str], list[int], int]:
        scheduler: Scheduler[str] = Scheduler("model 'm' v1", ModelConfig(max_batch_size=2))
        for name in "abc":
            scheduler.submit(name, rows=1, key=())
        lost = await scheduler.next_batch()  # a and b went to a worker that was lost
        scheduler.submit("d", rows=1, key=())
        scheduler.requeue(lost)
        count = scheduler.pending_count
        first, second = await scheduler.next_batch(), await scheduler.next_batch()
        return [p.payload for p in first], [p.payload for p in second], [p.retries for p in first], count

    first, second, retries, count = asyncio.run(run())
    assert (first, second, retries, count) == (["a", "b"], ["c", "d"], [1, 1], 4)


def test_a_closed_queue_fails_what_comes_back_and_cancelled_requests_stay_out() -> None:
    async def run() -> tuple[bool, bool, int]:
        scheduler: Scheduler[str] = Scheduler("model 'm' v1", ModelConfig(max_batch_size=2))
        scheduler.submit("a", rows=1, key=())
        scheduler.submit("b", rows=1, key=())
        a, b = await scheduler.next_batch()
        b.future.cancel()  # its client went away meanwhile
        scheduler.close(UnavailableError("stopping"))
        scheduler.requeue([a, b])
        return isinstance(a.future.exception(), UnavailableError), b.future.cancelled(), scheduler.pending_count

    assert asyncio.run(run()) == (True, True, 0)


def test_a_batch_that_never_reached_its_worker_comes_back_uncounted() -> None:
    """A batch formed for a worker that was drained before it was sent goes back as if never taken: its requests may
    still run again once should their next worker be lost with its node."""

    async def run() -> tuple[list[str], list[int]]:
        scheduler: Scheduler[str] = Scheduler("model 'm' v1", ModelConfig(max_batch_size=2))
        for name in "ab":
            scheduler.submit(name, rows=1, key=())
        scheduler.requeue(await scheduler.next_batch(), retried=False)
        again = await scheduler.next_batch()
        return [p.payload for p in again], [p.retries for p in again]

    assert asyncio.run(run()) == (["a", "b"], [0, 0])
