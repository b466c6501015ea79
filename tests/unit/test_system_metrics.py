"""CPU and GPU gauges under Triton's names: CPU from /proc (here a fake one), GPU through NVML (here a fake
``pynvml``: CI has no GPU; tests/gpu reads a real one). Without NVML, no GPU series and no error."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pybind_serve.system_metrics import SystemMetrics


def samples(system: SystemMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(system)
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def fake_proc(root: Path, busy: int, idle: int) -> Path:
    (root / "stat").write_text(f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\ncpu0 1 2 3 4\n")
    (root / "meminfo").write_text("MemTotal:       1000 kB\nMemFree:         100 kB\nMemAvailable:    250 kB\n")
    return root


def test_cpu_utilization_and_memory_from_proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # no NVML: CPU series only
    system = SystemMetrics(str(fake_proc(tmp_path, busy=100, idle=900)))
    fake_proc(tmp_path, busy=175, idle=925)  # 75 of the next 100 jiffies busy
    found = samples(system)
    assert found == {
        ("nv_cpu_utilization", ()): 0.75,
        ("nv_cpu_memory_total_bytes", ()): 1000 * 1024,
        ("nv_cpu_memory_used_bytes", ()): 750 * 1024,
    }


class FakeNvml(types.ModuleType):
    """Two GPUs, as NVML would answer for them."""

    def __init__(self) -> None:
        super().__init__("pynvml")
        self.energy = {0: 5_000, 1: 9_000}  # mJ

    def nvmlInit(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> int:
        return {"GPU-aaa": 0, "GPU-bbb": 1}[uuid]

    def nvmlDeviceGetUUID(self, handle: int) -> str:
        return ["GPU-aaa", "GPU-bbb"][handle]

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:
        return self.energy[handle]

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        return types.SimpleNamespace(total=80 << 30, used=(handle + 1) << 30)

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        return types.SimpleNamespace(gpu=40 + handle)

    def nvmlDeviceGetPowerUsage(self, handle: int) -> int:
        return 300_000

    def nvmlDeviceGetPowerManagementLimit(self, handle: int) -> int:
        return 700_000  # fmt: skip


@pytest.mark.parametrize(("visible", "uuids"), [(None, ["GPU-aaa", "GPU-bbb"]), ("1", ["GPU-bbb"]),
                                                 ("GPU-aaa", ["GPU-aaa"]), ("", [])])  # fmt: skip
def test_gpu_gauges_for_the_gpus_this_server_may_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, visible: str | None, uuids: list[str]
) -> None:
    nvml = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    system = SystemMetrics(str(fake_proc(tmp_path, 1, 1)))
    for handle in nvml.energy:
        nvml.energy[handle] += 2_500  # 2.5 J used since the server started
    found = samples(system)
    for uuid in uuids:
        handle = ["GPU-aaa", "GPU-bbb"].index(uuid)
        label = (("gpu_uuid", uuid),)
        assert found[("nv_gpu_utilization", label)] == pytest.approx((40 + handle) / 100)
        assert found[("nv_gpu_memory_total_bytes", label)] == 80 << 30
        assert found[("nv_gpu_memory_used_bytes", label)] == (handle + 1) << 30
        assert (found[("nv_gpu_power_usage", label)], found[("nv_gpu_power_limit", label)]) == (300.0, 700.0)
        assert f'nv_energy_consumption{{gpu_uuid="{uuid}"}} 2.5' in system.render_counters().decode().splitlines()
    gpu_series = {labels for (name, labels) in found if name.startswith("nv_gpu_")}
    assert gpu_series == {(("gpu_uuid", uuid),) for uuid in uuids}
