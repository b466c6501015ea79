"""The host's CPU and GPU gauges, under Triton's names, read when ``/metrics`` is scraped.

CPU (from ``/proc``, always): ``nv_cpu_utilization`` (0 to 1, over the time since the previous scrape),
``nv_cpu_memory_total_bytes``, ``nv_cpu_memory_used_bytes``.

GPU (through NVML, when the optional ``nvidia-ml-py`` is installed and a GPU is there; else no GPU series and no
error), one series per GPU this server may use (``CUDA_VISIBLE_DEVICES``, else every GPU), labelled by
``gpu_uuid``: ``nv_gpu_utilization`` (0 to 1), ``nv_gpu_memory_total_bytes``, ``nv_gpu_memory_used_bytes``,
``nv_gpu_power_usage`` and ``nv_gpu_power_limit`` (watts), ``nv_energy_consumption`` (joules since the server
started). NVML does not create a CUDA context: reading it costs the GPUs nothing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from .placement import listed_gpus

__all__ = ["SystemMetrics"]

log = logging.getLogger("pybind_serve.front")


class SystemMetrics:
    """CPU and GPU gauges; `collect` yields their families."""

    def __init__(self, proc: str = "/proc") -> None:
        self._proc = proc
        self._cpu_times: tuple[int, int] | None = self._read_cpu_times()
        self._gpus = _Gpus.open()

    def collect(self) -> Iterator[Metric]:
        yield from self._cpu()
        if self._gpus is not None:
            yield from self._gpus.collect()

    def render_counters(self) -> bytes:
        """``nv_energy_consumption``, by hand: prometheus_client would name a counter family ``..._total``,
        Triton does not."""
        return self._gpus.render_energy() if self._gpus is not None else b""

    def _read_cpu_times(self) -> tuple[int, int] | None:
        """(busy, total) jiffies of all CPUs, from the first line of /proc/stat."""
        try:
            with open(os.path.join(self._proc, "stat")) as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields) - idle, sum(fields)

    def _cpu(self) -> Iterator[Metric]:
        now, before = self._read_cpu_times(), self._cpu_times
        if now is not None and before is not None and now[1] > before[1]:
            utilization = GaugeMetricFamily("nv_cpu_utilization", "CPU utilization rate [0.0 - 1.0]")
            utilization.add_metric([], (now[0] - before[0]) / (now[1] - before[1]))
            yield utilization
        self._cpu_times = now if now is not None else before
        memory = _meminfo(os.path.join(self._proc, "meminfo"))
        if "MemTotal" in memory and "MemAvailable" in memory:
            total = GaugeMetricFamily("nv_cpu_memory_total_bytes", "CPU total memory (RAM), in bytes")
            total.add_metric([], memory["MemTotal"])
            used = GaugeMetricFamily("nv_cpu_memory_used_bytes", "CPU used memory (RAM), in bytes")
            used.add_metric([], memory["MemTotal"] - memory["MemAvailable"])
            yield from (total, used)


def _meminfo(path: str) -> dict[str, int]:
    found = {}
    try:
        with open(path) as f:
            for line in f:
                key, _, rest = line.partition(":")
                value = rest.split()
                if value:
                    found[key] = int(value[0]) * (1024 if value[-1] == "kB" else 1)
    except (OSError, ValueError):
        return {}
    return found


_GPU_GAUGES = {
    "utilization": ("nv_gpu_utilization", "GPU utilization rate [0.0 - 1.0)"),
    "total": ("nv_gpu_memory_total_bytes", "GPU total memory, in bytes"),
    "used": ("nv_gpu_memory_used_bytes", "GPU used memory, in bytes"),
    "power": ("nv_gpu_power_usage", "GPU power usage in watts"),
    "limit": ("nv_gpu_power_limit", "GPU power management limit in watts"),
}


class _Gpus:
    """NVML handles of the GPUs this server may use, and the energy each had used when we started."""

    def __init__(self, nvml: Any, handles: list[Any]) -> None:
        self._nvml, self._handles = nvml, handles
        self._uuids = [str(nvml.nvmlDeviceGetUUID(h)) for h in handles]
        self._energy_at_start = [self._energy_mj(h) for h in handles]

    @classmethod
    def open(cls) -> _Gpus | None:
        try:
            import pynvml  # nvidia-ml-py: the optional extra "gpu"
        except ImportError:
            return None
        try:
            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            listed = listed_gpus()
            names = [str(i) for i in range(count)] if listed is None else listed
            handles = [_handle(pynvml, name) for name in names]
            return cls(pynvml, handles) if handles else None
        except Exception as exc:  # no driver, no GPU, a name NVML does not know: no GPU metrics
            log.info("no GPU metrics: %s", exc)
            return None

    def _energy_mj(self, handle: Any) -> int | None:
        try:
            return int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
        except Exception:  # not every GPU reports it
            return None

    def collect(self) -> Iterator[Metric]:
        nvml = self._nvml
        families = {
            key: GaugeMetricFamily(name, help_text, labels=["gpu_uuid"])
            for key, (name, help_text) in _GPU_GAUGES.items()
        }
        for handle, uuid in zip(self._handles, self._uuids, strict=True):
            try:
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
                families["utilization"].add_metric([uuid], nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100)
                families["total"].add_metric([uuid], memory.total)
                families["used"].add_metric([uuid], memory.used)
                families["power"].add_metric([uuid], nvml.nvmlDeviceGetPowerUsage(handle) / 1000)
                families["limit"].add_metric([uuid], nvml.nvmlDeviceGetPowerManagementLimit(handle) / 1000)
            except Exception as exc:
                log.debug("reading GPU %s failed: %s", uuid, exc)
        yield from families.values()

    def render_energy(self) -> bytes:
        name = "nv_energy_consumption"
        lines = [f"# HELP {name} GPU energy consumption in joules since the server started", f"# TYPE {name} counter"]
        for handle, uuid, start in zip(self._handles, self._uuids, self._energy_at_start, strict=True):
            used_mj = self._energy_mj(handle)
            if used_mj is not None and start is not None:
                lines.append(f'{name}{{gpu_uuid="{uuid}"}} {(used_mj - start) / 1000}')
        return ("\n".join(lines) + "\n").encode()


def _handle(nvml: Any, name: str) -> Any:
    if name.isdigit():
        return nvml.nvmlDeviceGetHandleByIndex(int(name))
    return nvml.nvmlDeviceGetHandleByUUID(name if name.startswith("GPU-") else f"GPU-{name}")
