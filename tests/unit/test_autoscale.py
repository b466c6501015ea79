"""`Autoscale`'s checks and `Scaler`'s decisions, sample by sample (no clock, no cluster)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pybind_serve import Autoscale, ConfigurationError, ModelConfig, Tensor
from pybind_serve.autoscale import Scaler
from pybind_serve.spec import ModelSpec

POLICY = Autoscale(min_instances=1, max_instances=3, queue_per_instance=2, up_after_s=1.0, down_after_s=4.0)
TIMED = Autoscale(max_instances=4, queue_per_instance=2, up_after_s=1.0, down_after_s=4.0, queue_time_s=0.5)


def test_the_policy_is_checked() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Autoscale(min_instances=0, max_instances=True, queue_per_instance=0, up_after_s=-1)  # type: ignore[arg-type]
    for word in ("min_instances", "max_instances", "queue_per_instance", "up_after_s"):
        assert word in str(caught.value)
    for wrong in (0, -1.0, math.inf, "1", True):
        with pytest.raises(ConfigurationError, match=r"queue_time_s must be None or a number of seconds > 0"):
            Autoscale(queue_time_s=wrong)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="must not exceed"):
        Autoscale(min_instances=3, max_instances=2)
    with pytest.raises(ConfigurationError, match=r"instances \(5\) must lie within"):
        ModelConfig(instances=5, autoscale=Autoscale(max_instances=4))
    for policy in (POLICY, TIMED):
        spec = ModelSpec("m", 1, (Tensor("x", np.float32, (-1,)),), (), ModelConfig(autoscale=policy))
        assert ModelSpec.from_wire(spec.to_wire()).config.autoscale == policy


def test_up_only_after_the_queue_stayed_long_over_the_threshold() -> None:
    scaler = Scaler(POLICY)
    assert scaler.decide(0.0, instances=1, queued=3, busy=1) == 0  # over 2 per instance: the window starts
    assert scaler.decide(0.5, instances=1, queued=1, busy=1) == 0  # back under: it starts again
    assert [scaler.decide(t, instances=1, queued=5, busy=1) for t in (1.0, 1.5, 2.0)] == [0, 0, 2]  # ceil(5/2)
    assert scaler.decide(2.5, instances=3, queued=50, busy=3) == 0  # at the maximum


def test_down_one_at_a_time_after_a_quiet_window_to_the_minimum() -> None:
    scaler = Scaler(POLICY)
    assert scaler.decide(0.0, instances=3, queued=0, busy=3) == 0  # all busy: not idle
    assert [scaler.decide(t, instances=3, queued=0, busy=1) for t in (1.0, 3.0, 5.0)] == [0, 0, -1]
    assert scaler.decide(6.0, instances=2, queued=1, busy=1) == 0  # a request queued: the window starts again
    assert [scaler.decide(t, instances=2, queued=0, busy=0) for t in (7.0, 11.0)] == [0, -1]
    assert [scaler.decide(t, instances=1, queued=0, busy=0) for t in (12.0, 20.0)] == [0, 0]  # at the minimum


def test_out_of_bounds_counts_are_brought_back_at_once() -> None:
    assert Scaler(POLICY).decide(0.0, instances=0, queued=0, busy=0) == 1
    assert Scaler(POLICY).decide(0.0, instances=5, queued=0, busy=0) == -2


def test_without_queue_time_s_an_old_queue_alone_does_not_scale() -> None:
    scaler = Scaler(POLICY)
    assert [scaler.decide(t, instances=1, queued=1, busy=1, waited_s=60.0) for t in (0.0, 1.0, 2.0)] == [0, 0, 0]


def test_up_once_the_oldest_request_waited_too_long_at_every_look() -> None:
    """`queue_time_s`: a queue under the depth threshold but old at every look for ``up_after_s`` adds one
    instance; the window then starts again, so a queue that stays old adds one more per window."""
    scaler = Scaler(TIMED)
    assert scaler.decide(0.0, instances=1, queued=1, busy=1, waited_s=0.6) == 0  # old: the window starts
    assert scaler.decide(0.5, instances=1, queued=1, busy=1, waited_s=0.5) == 0  # not *longer*: it starts again
    assert [scaler.decide(t, instances=1, queued=1, busy=1, waited_s=0.8) for t in (1.0, 1.5, 2.0)] == [0, 0, 1]
    assert [scaler.decide(t, instances=2, queued=2, busy=2, waited_s=1.5) for t in (2.5, 3.0)] == [0, 1]
    assert [scaler.decide(t, instances=4, queued=2, busy=4, waited_s=9.0) for t in (3.5, 5.0)] == [0, 0]  # max


def test_either_signal_keeps_the_window_and_the_depth_says_how_many() -> None:
    scaler = Scaler(TIMED)
    assert scaler.decide(0.0, instances=1, queued=1, busy=1, waited_s=0.7) == 0  # old, not deep
    assert scaler.decide(0.5, instances=1, queued=6, busy=1, waited_s=0.1) == 0  # deep, not old: still crowded
    assert scaler.decide(1.0, instances=1, queued=7, busy=1, waited_s=0.9) == 3  # ceil(7 / 2) - 1


def test_an_empty_queue_is_never_old_and_scales_down_as_before() -> None:
    scaler = Scaler(TIMED)
    assert [scaler.decide(t, instances=2, queued=0, busy=1, waited_s=5.0) for t in (0.0, 2.0, 4.0)] == [0, 0, -1]
