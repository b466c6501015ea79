"""`Backoff`: when a dying worker process is started again."""

from __future__ import annotations

from pybind_serve.supervisor import Backoff


def test_the_first_death_restarts_at_once_then_the_delay_doubles_up_to_the_cap() -> None:
    backoff = Backoff(first_s=0.5, max_s=30.0, healthy_s=10.0)
    delays = [backoff.died(lived_s=0.1) for _ in range(9)]
    assert delays == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert backoff.failures == 9


def test_a_worker_that_lived_long_enough_resets_the_count() -> None:
    backoff = Backoff(first_s=0.5, max_s=30.0, healthy_s=10.0)
    assert [backoff.died(lived_s=1.0) for _ in range(3)] == [0.0, 0.5, 1.0]
    assert backoff.died(lived_s=10.0) == 0.0  # healthy for healthy_s: a fresh start
    assert backoff.failures == 1
    assert backoff.died(lived_s=1.0) == 0.5
