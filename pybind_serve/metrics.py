"""Prometheus metrics under Triton's names, kept as plain counters and exposed at scrape time.

The front counts everything (workers report their compute time in each result frame), so one process
holds the numbers of all of them. Counters are plain ints on the hot path; `MetricsCollector` turns them
into Prometheus families only when scraped. Names and labels follow Triton (``nv_inference_*`` with
``model`` and ``version``) so existing dashboards work; the batch-size histogram has no Triton
equivalent and is named ``pybind_serve_batch_size``.

>>> metrics = Metrics()
>>> metrics.model("add", 1).success += 1
>>> b'nv_inference_request_success{model="add",version="1"} 1' in metrics.render()
True
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from .system_metrics import SystemMetrics

__all__ = ["Metrics", "ModelStats"]

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

_COUNTERS = {
    "success": ("nv_inference_request_success", "Number of successful inference requests, all batch sizes"),
    "inference_count": ("nv_inference_count", "Number of inferences performed (a batch of n counts n)"),
    "exec_count": ("nv_inference_exec_count", "Number of model executions performed (one per batch)"),
    "request_us": ("nv_inference_request_duration_us", "Cumulative inference request duration in microseconds"),
    "queue_us": ("nv_inference_queue_duration_us", "Cumulative inference queuing duration in microseconds"),
    "input_us": ("nv_inference_compute_input_duration_us", "Cumulative compute input duration in microseconds"),
    "infer_us": ("nv_inference_compute_infer_duration_us", "Cumulative compute inference duration in microseconds"),
    "output_us": (
        "nv_inference_compute_output_duration_us",
        "Cumulative inference compute output duration in microseconds",
    ),
}
# Triton's response cache figures: rendered for the models whose requests looked in the cache.
_CACHE_COUNTERS = {
    "cache_hits": ("nv_cache_num_hits_per_model", "Number of cache hits per model"),
    "cache_misses": ("nv_cache_num_misses_per_model", "Number of cache misses per model"),
    "cache_hit_us": ("nv_cache_hit_duration_per_model", "Total cache hit duration per model, in microseconds"),
    "cache_miss_us": (
        "nv_cache_miss_duration_per_model",
        "Total cache miss (lookup and insert) duration per model, in microseconds",
    ),
}


@dataclass
class ModelStats:
    """The counters of one model version."""

    success: int = 0
    inference_count: int = 0
    exec_count: int = 0
    request_us: int = 0
    queue_us: int = 0
    input_us: int = 0
    infer_us: int = 0
    output_us: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    cache_hit_us: int = 0  # looking up and encoding the hits
    cache_miss_us: int = 0  # looking up the misses, and inserting their responses
    failures: dict[str, int] = field(default_factory=dict)
    batch_sizes: list[int] = field(default_factory=lambda: [0] * (len(BATCH_BUCKETS) + 1))
    batch_rows: int = 0
    last_inference_ms: int = 0  # when the last batch ran (or a cache hit answered), ms since the epoch; 0: never
    # Triton's batch_stats: per executed batch size (rows), [executions, compute input, infer, output µs]
    batch_stats: dict[int, list[int]] = field(default_factory=dict)

    def add(self, other: ModelStats) -> None:
        """Count ``other``'s figures in too (another front's, for totals)."""
        for name in (*_COUNTERS, *_CACHE_COUNTERS):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for reason, count in other.failures.items():
            self.failures[reason] = self.failures.get(reason, 0) + count
        self.batch_sizes = [a + b for a, b in zip(self.batch_sizes, other.batch_sizes, strict=True)]
        self.batch_rows += other.batch_rows
        self.last_inference_ms = max(self.last_inference_ms, other.last_inference_ms)
        for size, figures in other.batch_stats.items():  # a snapshot's sizes come as JSON's string keys
            mine = self.batch_stats.setdefault(int(size), [0, 0, 0, 0])
            for i, value in enumerate(figures):
                mine[i] += value

    def fail(self, reason: str) -> None:
        self.failures[reason] = self.failures.get(reason, 0) + 1

    def durations(self) -> dict[str, tuple[int, int]]:
        """The (count, cumulative ns) figures of Triton's statistics answer that these counters hold honestly.

        Durations are counted for successful requests, so their count is the success count (less the cache
        hits, which are neither queued nor computed, as Triton counts them); a failure's duration is not tracked
        (0 ns), and queue and compute-input time also include requests whose execution then failed.
        """
        ok = self.success
        ran = max(ok - self.cache_hits, 0)
        return {
            "success": (ok, self.request_us * 1000),
            "fail": (sum(self.failures.values()), 0),
            "queue": (ran, self.queue_us * 1000),
            "compute_input": (ran, self.input_us * 1000),
            "compute_infer": (ran, self.infer_us * 1000),
            "compute_output": (ran, self.output_us * 1000),
            "cache_hit": (self.cache_hits, self.cache_hit_us * 1000),
            "cache_miss": (self.cache_misses, self.cache_miss_us * 1000),
        }

    def executed(self, rows: int, input_us: int, infer_us: int, output_us: int) -> None:
        """One batch of ``rows`` ran, its inputs written in ``input_us``, computed in ``infer_us`` and its outputs
        handed out in ``output_us`` (Triton's ``batch_stats`` and ``last_inference``); `batch` counts it."""
        figures = self.batch_stats.get(rows)
        if figures is None:
            figures = self.batch_stats[rows] = [0, 0, 0, 0]
        figures[0] += 1
        figures[1] += input_us
        figures[2] += infer_us
        figures[3] += output_us
        self.last_inference_ms = int(time.time() * 1000)

    def batch_durations(self) -> dict[int, tuple[int, int, int, int]]:
        """Per executed batch size: (executions, compute input ns, compute infer ns, compute output ns)."""
        return {size: (count, i * 1000, c * 1000, o * 1000) for size, (count, i, c, o) in self.batch_stats.items()}

    def batch(self, rows: int) -> None:
        self.exec_count += 1
        self.inference_count += rows
        self.batch_rows += rows
        for i, bound in enumerate(BATCH_BUCKETS):
            if rows <= bound:
                self.batch_sizes[i] += 1
                return
        self.batch_sizes[-1] += 1


class Metrics:
    """The counters of every model version of one front, and their Prometheus rendering.

    With several fronts, ``peers`` gathers the other fronts' `snapshot`s, and `totals` gives the sums that
    ``/metrics`` and the statistics endpoints answer.
    """

    def __init__(
        self, pending: Callable[[], dict[tuple[str, int], int]] | None = None, system: SystemMetrics | None = None
    ) -> None:
        self._models: dict[tuple[str, int], ModelStats] = {}
        self._pending = pending or dict
        self.peers: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(MetricsCollector(self))
        self._system = system
        if system is not None:
            self.registry.register(system)

    def model(self, name: str, version: int) -> ModelStats:
        stats = self._models.get((name, version))
        if stats is None:
            stats = self._models[(name, version)] = ModelStats()
        return stats

    def items(self) -> list[tuple[tuple[str, int], ModelStats]]:
        return list(self._models.items())

    def pending(self) -> dict[tuple[str, int], int]:
        return self._pending()

    def snapshot(self) -> dict[str, Any]:
        """This front's counters and pending counts, as plain data for another front to add up."""
        models = [[name, version, asdict(stats)] for (name, version), stats in self._models.items()]
        return {"models": models, "pending": [[n, v, count] for (n, v), count in self.pending().items()]}

    def merged(self, snapshots: Iterable[dict[str, Any]]) -> Metrics:
        """These counters plus those of other fronts' ``snapshots``, as one `Metrics` to render or read."""
        pending = dict(self.pending())
        total = Metrics(pending=lambda: pending, system=self._system)
        for (name, version), stats in self._models.items():
            total.model(name, version).add(stats)
        for snapshot in snapshots:
            for name, version, fields in snapshot["models"]:
                total.model(name, version).add(ModelStats(**fields))
            for name, version, count in snapshot["pending"]:
                pending[(name, version)] = pending.get((name, version), 0) + count
        return total

    async def totals(self) -> Metrics:
        """The whole server's counters: this front's alone, or summed with its peers'."""
        if self.peers is None:
            return self
        return self.merged(await self.peers())

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        system = self._system.render_counters() if self._system is not None else b""
        return _render_counters(self.items()) + system + generate_latest(self.registry)


class MetricsCollector(Collector):
    """The gauge and the histogram (the counters are rendered by `_render_counters`)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        pending = GaugeMetricFamily(
            "nv_inference_pending_request_count",
            "Instantaneous number of pending requests awaiting execution",
            labels=["model", "version"],
        )
        for (name, version), count in sorted(self._metrics.pending().items()):
            pending.add_metric([name, str(version)], count)
        yield pending
        yield _batch_histogram(self._metrics.items())


def _render_counters(items: list[tuple[tuple[str, int], ModelStats]]) -> bytes:
    # By hand: prometheus_client names counter families "<name>_total", Triton (and its dashboards) do not.
    lines = []
    for attr, (metric, doc) in _COUNTERS.items():
        lines += [f"# HELP {metric} {doc}", f"# TYPE {metric} counter"]
        lines += [f'{metric}{{model="{_escape(n)}",version="{v}"}} {getattr(s, attr)}' for (n, v), s in items]
    metric = "nv_inference_request_failure"
    lines += [f"# HELP {metric} Number of failed inference requests, all batch sizes", f"# TYPE {metric} counter"]
    for (name, version), stats in items:
        for reason, count in sorted(stats.failures.items()):
            lines.append(f'{metric}{{model="{_escape(name)}",reason="{_escape(reason)}",version="{version}"}} {count}')
    cached = [(key, stats) for key, stats in items if stats.cache_hits or stats.cache_misses]
    for attr, (metric, doc) in _CACHE_COUNTERS.items() if cached else ():
        lines += [f"# HELP {metric} {doc}", f"# TYPE {metric} counter"]
        lines += [f'{metric}{{model="{_escape(n)}",version="{v}"}} {getattr(s, attr)}' for (n, v), s in cached]
    return ("\n".join(lines) + "\n").encode()


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _batch_histogram(items: list[tuple[tuple[str, int], ModelStats]]) -> Metric:
    histogram = HistogramMetricFamily(
        "pybind_serve_batch_size", "Rows per model execution", labels=["model", "version"]
    )
    for (name, version), stats in items:
        cumulative, buckets = 0, []
        for bound, count in zip((*BATCH_BUCKETS, float("inf")), stats.batch_sizes, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
        histogram.add_metric([name, str(version)], buckets, sum_value=stats.batch_rows)
    return histogram
