"""The fault-injection suite: each probe of `probes` against a real server on loopback, with what users need of
it asserted. Every probe checks that its server left no process, /dev/shm segment or socket file behind.
``python -m tests.faults.report`` runs the same probes and prints their table."""

from __future__ import annotations

import pytest

from . import probes
from .harness import STOP_GRACE_S, Outcome

MODES = probes.MODES


def nothing_lost_or_left(outcome: Outcome) -> None:
    assert outcome.lost == 0, [a for a in outcome.answers if a.status is None]
    assert outcome.leaks == []


def http_errors_are_json(outcome: Outcome) -> None:
    plain = [a for a in outcome.answers if a.protocol == "http" and not a.ok and not a.json]
    assert plain == []


@pytest.mark.parametrize("mode", MODES)
def test_sys_exit_and_keyboard_interrupt_fail_the_call_and_the_model_keeps_serving(mode: str) -> None:
    outcome = probes.user_exit(mode)
    nothing_lost_or_left(outcome)
    errors = [a for a in outcome.answers if not a.ok]
    assert [a.status for a in errors] == [500, 500, "INTERNAL", "INTERNAL"]
    assert ["SystemExit" in errors[0].message, "KeyboardInterrupt" in errors[1].message] == [True, True]
    assert ["SystemExit" in errors[2].message, "KeyboardInterrupt" in errors[3].message] == [True, True]
    assert outcome.ok == 20
    assert outcome.figures["ready"] == 200


@pytest.mark.parametrize("mode", MODES)
def test_sigterm_stops_in_bounded_time_while_the_function_hangs(mode: str) -> None:
    outcome = probes.drain_while_hung(mode)
    nothing_lost_or_left(outcome)
    assert 0 < outcome.figures["stop_s"] <= probes.DRAIN_S + STOP_GRACE_S + 2
    assert outcome.statuses() == [503, "UNAVAILABLE", 503, 503]
    http_errors_are_json(outcome)
    assert all("drain_timeout_s=2 s passed" in a.message for a in outcome.answers)


@pytest.mark.parametrize("mode", MODES)
def test_execution_timeout_fails_the_batch_and_nothing_waits_forever(mode: str) -> None:
    outcome = probes.execution_timeout(mode)
    nothing_lost_or_left(outcome)
    hung, *queued, hung_grpc, after = outcome.answers
    assert hung.status == 504 and "execution_timeout_s=1 s" in hung.message and "'fault'" in hung.message
    assert hung.seconds < probes.TIMEOUT_S + 1
    assert hung_grpc.status == "DEADLINE_EXCEEDED" and "execution_timeout_s=1 s" in hung_grpc.message
    assert after.ok
    assert outcome.figures["queued_s"] < probes.TIMEOUT_S + 1  # none waited for the hung function to return
    if mode == "process":  # the other instance served the queue; the hung one was replaced
        assert [a.status for a in queued] == [200] * 4
        assert outcome.figures["ready_after"] == outcome.figures["ready_later"] == 200
    else:  # the only worker is stuck: the queue fails at once, and the model is not ready until it returns
        assert [a.status for a in queued] == [503] * 4
        assert all("still running a batch that passed execution_timeout_s" in a.message for a in queued)
        assert (outcome.figures["ready_after"], outcome.figures["ready_later"]) == (503, 200)


@pytest.mark.parametrize("mode", MODES)
def test_every_process_dies_with_a_killed_owner_and_nothing_is_left(mode: str) -> None:
    outcome = probes.owner_killed(mode)
    nothing_lost_or_left(outcome)
    assert all(a.status in (503, "UNAVAILABLE") for a in outcome.answers), outcome.answers


def test_a_crashing_worker_is_restarted_with_back_off_and_every_call_is_answered() -> None:
    outcome = probes.crash_loop()
    nothing_lost_or_left(outcome)
    assert set(outcome.statuses()) <= {500, 503}
    assert 2 <= outcome.figures["restarts"] <= 7  # immediately, then after 0.5, 1, 2 s ...: not one per call
    assert outcome.figures["reason_given"] == 1.0


def test_a_huge_exception_message_is_cut_over_both_protocols() -> None:
    outcome = probes.huge_error()
    nothing_lost_or_left(outcome)
    http, grpc_, after = outcome.answers
    assert (http.status, grpc_.status) == (500, "INTERNAL")
    assert http.size < 10_000 and grpc_.size < 10_000
    assert "ValueError" in http.message and "ValueError" in grpc_.message
    assert after.ok


def test_a_gzip_bomb_costs_little_memory_and_does_not_stall_others() -> None:
    outcome = probes.gzip_bomb()
    nothing_lost_or_left(outcome)
    assert outcome.statuses() == [413, 400]  # the bomb; a compressed JSON nested too deeply
    assert outcome.figures["front_peak_growth_mib"] < 64
    assert outcome.figures["bystander_max_s"] < 1.0


def test_huge_and_numerous_headers_are_refused_early() -> None:
    outcome = probes.huge_header()
    nothing_lost_or_left(outcome)
    assert outcome.statuses() == [431, 431, "RESOURCE_EXHAUSTED"]
    assert outcome.figures["header_mib_taken"] < 16  # what the socket buffers held, not the whole 128 MiB
    assert outcome.figures["front_peak_growth_mib"] < 64
    assert outcome.figures["bystander_max_s"] < 1.0


def test_a_slow_client_times_out_without_holding_others() -> None:
    outcome = probes.slow_client()
    nothing_lost_or_left(outcome)
    (answer,) = outcome.answers
    assert answer.status == 408 and 1.5 < answer.seconds < 4
    assert outcome.figures["bystander_max_s"] < 1.0


def test_json_nested_too_deeply_is_400() -> None:
    outcome = probes.deep_json()
    nothing_lost_or_left(outcome)
    assert outcome.statuses() == [400, 400]
    assert all("nested too deeply" in a.message for a in outcome.answers)


def test_bursts_of_grpc_calls_are_all_answered() -> None:
    outcome = probes.grpc_burst()
    nothing_lost_or_left(outcome)
    assert outcome.ok == outcome.sent == 4000


@pytest.mark.parametrize("mode", MODES)
def test_memory_taken_by_a_burst_is_given_back(mode: str) -> None:
    outcome = probes.burst_memory(mode)
    nothing_lost_or_left(outcome)
    assert outcome.ok == 40
    figures = outcome.figures
    assert figures["peak_mib"] - figures["before_mib"] > 150  # the burst did take memory
    assert figures["after_mib"] - figures["before_mib"] < 64
