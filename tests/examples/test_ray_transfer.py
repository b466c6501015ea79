"""`benchmarks/ray_transfer.py --quick` cannot rot: on its own two-node Ray cluster on loopback it measures every
path (ZeroMQ in the clear, with CurveZMQ and with a kept input buffer; Ray's object store across nodes and on one;
through `Serve`), writes the documented results, shows that the object store really moved the objects between the
nodes' stores, and leaves no process (Ray's daemons included) or segment behind. About 10 s; skipped where Ray is
not installed."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.conftest import wait_until

from .test_benchmarks import MARKER, ROOT, orphaned_segments, processes_marked

# Not imported here: the script runs in a process of its own.
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ray") is None, reason="Ray is not installed (pip install 'pybind_serve[ray]')"
)

PATHS = [
    "ZeroMQ TCP, plain",
    "ZeroMQ TCP, CurveZMQ",
    "ZeroMQ TCP, plain, input copied into a kept buffer",
    "Ray object store, other node",
    "Ray object store, same node (no transfer)",
    "Serve, no backend (forked worker, shared memory)",
    "Serve, RayBackend tcp, plain",
    "Serve, RayBackend tcp, CurveZMQ",
]


def test_the_quick_run_measures_every_path_and_cleans_up(tmp_path: Path) -> None:
    token, orphans_before = uuid.uuid4().hex, orphaned_segments()
    done = subprocess.run(
        [sys.executable, "benchmarks/ray_transfer.py", "--quick", "--out", str(tmp_path), "--name", "quick"],
        cwd=ROOT,
        env={**os.environ, MARKER: token},
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"the quick run exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert wait_until(lambda: not processes_marked(token), 15), "Ray's daemons or a server outlived the run"
    assert not orphaned_segments() - orphans_before, "the run left shared memory behind"

    document = json.loads((tmp_path / "quick.json").read_text())
    assert [row["path"] for row in document["rows"]] == PATHS
    for row in document["rows"]:
        assert row["mib"] == 1 and len(row["runs_ms"]) == 2 and row["round_trip_ms"] > 0 and row["mb_per_s"] > 0
    driver, other = document["driver_node"], document["other_node"]
    assert driver != other
    across, same = (document["object_locations"][path] for path in PATHS[3:5])
    assert set(across["input"]) == set(across["answer"]) == {driver, other}  # pulled into the other store and back
    assert same == {"input": [driver], "answer": [driver]}
    table = (tmp_path / "quick.md").read_text()
    assert "| path | 1 MiB: ms, MB/s |" in table and all(f"| {path} |" in table for path in PATHS)
