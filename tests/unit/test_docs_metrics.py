"""docs/metrics.md lists every Prometheus metric the server exports, with its type and labels.

The metrics are rendered as ``/metrics`` renders them, with every family present: a model version that
succeeded, failed and used the response cache, a CPU read from a fake /proc and two GPUs through the fake NVML
of test_system_metrics (CI has no GPU). Their names, types and label names must be the page's rows, no more and
no fewer; and every metric name written in pybind_serve/metrics.py and system_metrics.py must be on the page,
so a family rendered only in some state is not missed either.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pybind_serve.metrics import Metrics
from pybind_serve.system_metrics import SystemMetrics
from tests.unit.test_system_metrics import FakeNvml, fake_proc

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "metrics.md"
SOURCES = [ROOT / "pybind_serve" / "metrics.py", ROOT / "pybind_serve" / "system_metrics.py"]
Row = tuple[str, frozenset[str]]  # (type, label names)


def documented() -> dict[str, Row]:
    """Metric name -> (type, labels) from the page's table rows ``| `name` | type | `label`, ... | meaning |``."""
    rows: dict[str, Row] = {}
    for line in PAGE.read_text().splitlines():
        if row := re.match(r"\| `([a-z_]+)` \| (counter|gauge|histogram) \| ([^|]*) \|", line):
            name, kind, labels = row.groups()
            assert name not in rows, f"{name} is listed twice"
            rows[name] = (kind, frozenset(re.findall(r"`(\w+)`", labels)))
    return rows


def exported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Row]:
    """Every family of a rendered /metrics, with all of them present."""
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml())
    system = SystemMetrics(str(fake_proc(tmp_path, busy=100, idle=900)))
    fake_proc(tmp_path, busy=150, idle=950)  # a second reading: utilization needs two
    metrics = Metrics(pending=lambda: {("model", 1): 2}, system=system)
    stats = metrics.model("model", 1)
    stats.success += 1
    stats.batch(3)
    stats.fail("BACKEND")
    stats.cache_hits += 1
    families = text_string_to_metric_families(metrics.render().decode())
    return {
        family.name: (family.type, frozenset(label for s in family.samples for label in s.labels if label != "le"))
        for family in families
    }


def test_every_exported_metric_is_on_the_page_with_its_type_and_labels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    found, listed = exported(tmp_path, monkeypatch), documented()
    assert len(found) >= 24, sorted(found)  # the render above really has every family
    missing = sorted(found.keys() - listed.keys())
    assert not missing, f"docs/metrics.md lacks {missing}"
    gone = sorted(listed.keys() - found.keys())
    assert not gone, f"docs/metrics.md lists metrics the server does not export: {gone}"
    wrong = {name: (listed[name], found[name]) for name in found if listed[name] != found[name]}
    assert not wrong, f"docs/metrics.md says (type, labels) ..., the server exports ...: {wrong}"


def test_every_metric_name_in_the_code_is_on_the_page() -> None:
    named = set()
    for source in SOURCES:
        named |= set(re.findall(r"\"((?:nv|pybind_serve)_[a-z_]+)\"", source.read_text()))
    assert len(named) >= 24, sorted(named)
    missing = sorted(named - documented().keys())
    assert not missing, f"docs/metrics.md lacks metrics named in {[s.name for s in SOURCES]}: {missing}"
