"""`Metrics`: Triton's metric names and labels in the Prometheus text, counters, gauge and histogram."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from pybind_serve.metrics import BATCH_BUCKETS, Metrics, ModelStats
from pybind_serve.transport.frames import decode, encode

COUNTERS = [
    ("success", "nv_inference_request_success"),
    ("inference_count", "nv_inference_count"),
    ("exec_count", "nv_inference_exec_count"),
    ("request_us", "nv_inference_request_duration_us"),
    ("queue_us", "nv_inference_queue_duration_us"),
    ("input_us", "nv_inference_compute_input_duration_us"),
    ("infer_us", "nv_inference_compute_infer_duration_us"),
    ("output_us", "nv_inference_compute_output_duration_us"),
]


def lines(metrics: Metrics) -> list[str]:
    return metrics.render().decode().splitlines()


def samples(metrics: Metrics, name: str) -> dict[str, float]:
    """``{labels: value}`` of the samples of one metric name, e.g. ``{'model="m",version="1"': 3.0}``."""
    out = {}
    for line in lines(metrics):
        if line.startswith(name + "{"):
            labels, value = line[len(name) + 1 :].rsplit("} ", 1)
            out[labels] = float(value)
    return out


@pytest.mark.parametrize(("attr", "metric"), COUNTERS)
def test_counters_use_triton_names_and_labels(attr: str, metric: str) -> None:
    metrics = Metrics()
    setattr(metrics.model("m", 1), attr, 42)
    out = lines(metrics)
    assert f'{metric}{{model="m",version="1"}} 42' in out
    assert f"# TYPE {metric} counter" in out
    assert any(line.startswith(f"# HELP {metric} ") for line in out)


def test_the_success_counter_exactly() -> None:
    metrics = Metrics()
    metrics.model("m", 1).success += 3
    assert b'\nnv_inference_request_success{model="m",version="1"} 3\n' in metrics.render()


def test_counters_have_no_total_suffix() -> None:
    metrics = Metrics()
    stats = metrics.model("m", 1)
    stats.success, stats.request_us = 1, 10
    stats.fail("REJECTED")
    text = metrics.render().decode()
    assert "_total" not in text
    assert "_created" not in text


def test_every_counter_is_rendered_even_when_zero() -> None:
    metrics = Metrics()
    metrics.model("m", 2)
    for _, metric in COUNTERS:
        assert samples(metrics, metric) == {'model="m",version="2"': 0}


def test_every_model_version_has_its_own_counters() -> None:
    metrics = Metrics()
    metrics.model("a", 1).success = 1
    metrics.model("a", 2).success = 2
    metrics.model("b", 1).success = 3
    assert metrics.model("a", 1) is metrics.model("a", 1)
    assert samples(metrics, "nv_inference_request_success") == {
        'model="a",version="1"': 1,
        'model="a",version="2"': 2,
        'model="b",version="1"': 3,
    }


def test_no_models_no_samples() -> None:
    metrics = Metrics()
    out = lines(metrics)
    assert "# TYPE nv_inference_request_success counter" in out
    assert not [line for line in out if line and not line.startswith("#")]


def test_failures_by_reason() -> None:
    metrics = Metrics()
    stats = metrics.model("m", 1)
    for reason in ["REJECTED", "BACKEND", "REJECTED", "CANCELED"]:
        stats.fail(reason)
    metrics.model("quiet", 1)
    out = lines(metrics)
    assert "# TYPE nv_inference_request_failure counter" in out
    failures = [line for line in out if line.startswith("nv_inference_request_failure{")]
    assert failures == [
        'nv_inference_request_failure{model="m",reason="BACKEND",version="1"} 1',
        'nv_inference_request_failure{model="m",reason="CANCELED",version="1"} 1',
        'nv_inference_request_failure{model="m",reason="REJECTED",version="1"} 2',
    ]


def test_pending_gauge_comes_from_the_callback_at_scrape_time() -> None:
    pending = {("m", 1): 3, ("a", 2): 0}
    metrics = Metrics(pending=lambda: dict(pending))
    out = lines(metrics)
    assert "# TYPE nv_inference_pending_request_count gauge" in out
    assert samples(metrics, "nv_inference_pending_request_count") == {
        'model="a",version="2"': 0,
        'model="m",version="1"': 3,
    }
    pending[("m", 1)] = 7
    assert samples(metrics, "nv_inference_pending_request_count")['model="m",version="1"'] == 7
    assert metrics.pending() == {("m", 1): 7, ("a", 2): 0}


def test_no_pending_callback_no_gauge_samples() -> None:
    metrics = Metrics()
    metrics.model("m", 1)
    assert metrics.pending() == {}
    assert samples(metrics, "nv_inference_pending_request_count") == {}
    assert "# TYPE nv_inference_pending_request_count gauge" in lines(metrics)


def test_batch_updates_the_counters() -> None:
    stats = ModelStats()
    stats.batch(3)
    stats.batch(5)
    assert (stats.exec_count, stats.inference_count, stats.batch_rows) == (2, 8, 8)


@pytest.mark.parametrize(
    ("rows", "bucket"),
    [(0, 0), (1, 0), (2, 1), (3, 2), (4, 2), (5, 3), (16, 4), (17, 5), (1024, 10), (1025, 11), (10**6, 11)],
)
def test_batch_picks_the_smallest_bucket_that_holds_it(rows: int, bucket: int) -> None:
    stats = ModelStats()
    stats.batch(rows)
    expected = [0] * (len(BATCH_BUCKETS) + 1)
    expected[bucket] = 1
    assert stats.batch_sizes == expected


def test_batch_size_histogram() -> None:
    metrics = Metrics()
    stats = metrics.model("m", 1)
    for rows in [1, 1, 3, 8, 9, 2000]:
        stats.batch(rows)
    out = lines(metrics)
    assert "# TYPE pybind_serve_batch_size histogram" in out
    buckets = samples(metrics, "pybind_serve_batch_size_bucket")
    cumulative = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, "+Inf"]
    expected = [2, 2, 3, 4, 5, 5, 5, 5, 5, 5, 5, 6]
    assert buckets == {f'le="{le}",model="m",version="1"': n for le, n in zip(cumulative, expected, strict=True)}
    assert samples(metrics, "pybind_serve_batch_size_count") == {'model="m",version="1"': 6}
    assert samples(metrics, "pybind_serve_batch_size_sum") == {'model="m",version="1"': 2022}
    assert samples(metrics, "nv_inference_exec_count") == {'model="m",version="1"': 6}
    assert samples(metrics, "nv_inference_count") == {'model="m",version="1"': 2022}


@pytest.mark.parametrize(
    ("name", "escaped"),
    [('say "hi"', r"say \"hi\""), ("back\\slash", r"back\\slash"), ("two\nlines", r"two\nlines")],
)
def test_label_values_are_escaped(name: str, escaped: str) -> None:
    metrics = Metrics(pending=lambda: {(name, 1): 2})
    stats = metrics.model(name, 1)
    stats.success = 1
    stats.fail("BACKEND")
    stats.batch(1)
    out = lines(metrics)
    assert f'nv_inference_request_success{{model="{escaped}",version="1"}} 1' in out
    assert f'nv_inference_request_failure{{model="{escaped}",reason="BACKEND",version="1"}} 1' in out
    assert samples(metrics, "nv_inference_pending_request_count") == {f'model="{escaped}",version="1"': 2}
    assert samples(metrics, "pybind_serve_batch_size_count") == {f'model="{escaped}",version="1"': 1}


def test_each_metrics_has_its_own_registry() -> None:
    first, second = Metrics(), Metrics()
    first.model("only_first", 1).success = 1
    assert first.registry is not second.registry
    assert b"only_first" not in second.render()


def test_totals_add_up_every_fronts_counters_and_pending_requests() -> None:
    """With several fronts, /metrics and the statistics answer the sum of each front's snapshot."""
    here, there = Metrics(pending=lambda: {("m", 1): 2}), Metrics(pending=lambda: {("m", 1): 3, ("n", 1): 1})
    for metrics, rows in ((here, 4), (there, 64)):
        stats = metrics.model("m", 1)
        stats.success += rows
        stats.request_us += 10
        stats.batch(rows)
        stats.fail("OTHER")
    there.model("n", 1).success = 7
    total = here.merged([there.snapshot()])
    m = total.model("m", 1)
    assert (m.success, m.exec_count, m.inference_count, m.request_us, m.failures) == (68, 2, 68, 20, {"OTHER": 2})
    assert m.batch_sizes[2] == 1 and m.batch_sizes[6] == 1 and m.batch_rows == 68
    assert total.model("n", 1).success == 7
    assert total.pending() == {("m", 1): 5, ("n", 1): 1}
    text = total.render().decode()
    assert 'nv_inference_request_success{model="m",version="1"} 68' in text
    assert 'nv_inference_pending_request_count{model="m",version="1"} 5.0' in text
    assert here.model("m", 1).success == 4  # the front's own counters are left as they were


def test_a_single_front_totals_are_its_own_counters() -> None:
    metrics = Metrics()
    assert asyncio.run(metrics.totals()) is metrics


def test_totals_ask_the_peers() -> None:
    here, there = Metrics(), Metrics()
    there.model("m", 1).success = 5

    async def peers() -> list[dict[str, Any]]:
        return [there.snapshot()]

    here.peers = peers
    assert asyncio.run(here.totals()).model("m", 1).success == 5


def test_executed_batches_fill_triton_batch_stats_and_last_inference() -> None:
    stats = ModelStats()
    assert (stats.last_inference_ms, stats.batch_durations()) == (0, {})
    before_ms = time.time() * 1000
    stats.executed(4, 10, 200, 30)
    stats.executed(4, 12, 220, 32)
    stats.executed(1, 5, 100, 0)
    assert stats.batch_durations() == {4: (2, 22_000, 420_000, 62_000), 1: (1, 5_000, 100_000, 0)}
    assert before_ms - 1 <= stats.last_inference_ms <= time.time() * 1000 + 1


def test_totals_sum_batch_stats_over_the_fronts_and_take_the_latest_inference() -> None:
    """A peer's snapshot travels as JSON (batch sizes become string keys): the totals still add up by size."""
    here, there = Metrics(), Metrics()
    here.model("m", 1).executed(4, 1, 2, 3)
    there.model("m", 1).executed(4, 10, 20, 30)
    there.model("m", 1).executed(8, 1, 1, 1)
    here.model("m", 1).last_inference_ms, there.model("m", 1).last_inference_ms = 2_000, 1_000
    total = here.merged([decode(encode(there.snapshot()))]).model("m", 1)
    assert total.batch_durations() == {4: (2, 11_000, 22_000, 33_000), 8: (1, 1_000, 1_000, 1_000)}
    assert total.last_inference_ms == 2_000
    assert here.model("m", 1).batch_durations() == {4: (1, 1_000, 2_000, 3_000)}  # left as it was
