"""`Autoscale`'s checks and `Scaler`'s decisions, sample by sample (no clock, no cluster)."""

from __future__ import annotations

import numpy as np
import pytest

from pybind_serve import Autoscale, ConfigurationError, ModelConfig, Tensor
from pybind_serve.autoscale import Scaler
from pybind_serve.spec import ModelSpec

POLICY = Autoscale(min_instances=1, max_instances=3, queue_per_instance=2, up_after_s=1.0, down_after_s=4.0)


def test_the_policy_is_checked() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Autoscale(min_instances=0, max_instances=True, queue_per_instance=0, up_after_s=-1)  # type: ignore[arg-type]
    for word in ("min_instances", "max_instances", "queue_per_instance", "up_after_s"):
        assert word in str(caught.value)
    with pytest.raises(ConfigurationError, match="must not exceed"):
        Autoscale(min_instances=3, max_instances=2)
    with pytest.raises(ConfigurationError, match=r"instances \(5\) must lie within"):
        ModelConfig(instances=5, autoscale=Autoscale(max_instances=4))
    config = ModelConfig(autoscale=POLICY)
    spec = ModelSpec("m", 1, (Tensor("x", np.float32, (-1,)),), (), config)
    assert ModelSpec.from_wire(spec.to_wire()).config.autoscale == POLICY


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
