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

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

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
    failures: dict[str, int] = field(default_factory=dict)
    batch_sizes: list[int] = field(default_factory=lambda: [0] * (len(BATCH_BUCKETS) + 1))
    batch_rows: int = 0

    def fail(self, reason: str) -> None:
        self.failures[reason] = self.failures.get(reason, 0) + 1

    def durations(self) -> dict[str, tuple[int, int]]:
        """The (count, cumulative ns) figures of Triton's statistics answer that these counters hold honestly.

        Durations are counted for successful requests, so their count is the success count; a failure's
        duration is not tracked (0 ns), and queue and compute-input time also include requests whose
        execution then failed.
        """
        ok = self.success
        return {
            "success": (ok, self.request_us * 1000),
            "fail": (sum(self.failures.values()), 0),
            "queue": (ok, self.queue_us * 1000),
            "compute_input": (ok, self.input_us * 1000),
            "compute_infer": (ok, self.infer_us * 1000),
            "compute_output": (ok, self.output_us * 1000),
        }

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
    """The counters of every model version of one server, and their Prometheus rendering."""

    def __init__(
        self, pending: Callable[[], dict[tuple[str, int], int]] | None = None, system: SystemMetrics | None = None
    ) -> None:
        self._models: dict[tuple[str, int], ModelStats] = {}
        self._pending = pending or dict
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
