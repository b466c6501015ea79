"""The benchmark suite cannot rot: its smoke mode (``python benchmarks/suite.py --smoke``) runs every scenario's
code path on our server, writes results of the documented shape, and leaves no process or segment behind. A
clone alone can run the comparison (the anchors' setup and the ceiling's app are in the repository), and a run
rewrites no tracked result file unless asked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.harness.cli import LOCAL_RESULTS, RESULTS, parse
from benchmarks.harness.perf_analyzer import find as find_perf_analyzer
from benchmarks.harness.systems import ANCHORS, SYSTEMS, Tools
from pybind_serve.client import ModelClient
from tests.conftest import SHM, wait_until

pytestmark = pytest.mark.perf_analyzer

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 300
MARKER = "PYBIND_SERVE_BENCHMARK_TEST"  # set in the suite's environment, so its servers inherit it
FRONTS = {"HTTP", "gRPC", "HTTP (asyncio)"}


@pytest.fixture(scope="module")
def perf_analyzer() -> str:
    """$PERF_ANALYZER or the one on PATH, if it works; CI must run this test, so there a missing one fails."""
    found = find_perf_analyzer([os.environ.get("PERF_ANALYZER")])
    if found is None and os.environ.get("CI"):
        pytest.fail("no working perf_analyzer in $PERF_ANALYZER or on PATH; CI provides one (.ci/perf_analyzer.sh)")
    if found is None:
        pytest.skip("no working perf_analyzer in $PERF_ANALYZER or on PATH")
    return found


def processes_marked(token: str) -> set[int]:
    """Live processes whose environment holds ``MARKER=token``."""
    needle = f"{MARKER}={token}".encode()
    found = set()
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and needle in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                found.add(int(entry))
        except OSError:
            continue
    return found


def orphaned_segments() -> set[str]:
    """Our segments whose owner process is gone (names start with ``pybind_serve_<owner pid>_``)."""
    names = [name for name in os.listdir(SHM) if name.startswith("pybind_serve_")]
    return {name for name in names if not Path(f"/proc/{name.split('_')[2]}").exists()}


@pytest.fixture(scope="module")
def smoke(perf_analyzer: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, str]:
    out, token = tmp_path_factory.mktemp("benchmarks"), uuid.uuid4().hex
    orphans_before = orphaned_segments()
    command = [sys.executable, "benchmarks/suite.py", "--smoke", "--no-setup", "--out", str(out)]
    done = subprocess.run(
        [*command, "--perf-analyzer", perf_analyzer],
        cwd=ROOT,
        env={**os.environ, MARKER: token},
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"the smoke run exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    assert not orphaned_segments() - orphans_before, "the suite left shared memory behind"
    return json.loads((out / "suite-smoke.json").read_text()), out, token


def ours(document: dict[str, Any], scenario: str) -> list[dict[str, Any]]:
    return [row for row in document["rows"] if row["scenario"] == scenario and row["system"] == "pybind_serve"]


def test_no_server_outlives_the_suite(smoke: tuple[dict[str, Any], Path, str]) -> None:
    assert not processes_marked(smoke[2])


def test_writes_the_json_and_the_markdown_summary(smoke: tuple[dict[str, Any], Path, str]) -> None:
    document, out, _ = smoke
    assert document["smoke"] is True and document["systems"] == ["pybind_serve"]
    assert document["table"].startswith("| scenario | system | req/s | p50 ms | p99 ms |")
    assert document["table"] in (out / "suite-smoke.md").read_text()
    for row in document["rows"]:
        assert {"scenario", "case", "system", "front", "generator", "status", "median", "runs", "errors"} <= set(row)


@pytest.mark.parametrize("scenario", ["a", "c"])
def test_throughput_scenarios_over_every_front(smoke: tuple[dict[str, Any], Path, str], scenario: str) -> None:
    rows = ours(smoke[0], scenario)
    assert {row["front"] for row in rows} == FRONTS
    if scenario == "a":
        assert {row["case"] for row in rows} == {"add_sub c=1", "add_sub c=8", "add_sub c=64"}
    for row in rows:
        assert row["status"] == "ok", row
        assert row["median"]["req_s"] > 0 and 0 < row["median"]["p50_ms"] <= row["median"]["p99_ms"]


def test_large_tensors_over_the_network_and_shared_memory(smoke: tuple[dict[str, Any], Path, str]) -> None:
    rows = {(row["case"].endswith("system shm"), row["front"]): row for row in ours(smoke[0], "b")}
    assert set(rows) == {(False, "HTTP"), (False, "gRPC"), (True, "HTTP")}
    assert rows[False, "HTTP"]["status"] == rows[False, "gRPC"]["status"] == "ok"
    shm = rows[True, "HTTP"]
    # Until the server supports the KServe shared-memory extension, the suite says so instead of failing.
    assert shm["status"] == "ok" or (shm["status"], shm["note"]) == ("n/a", "n/a (not supported yet)")


def test_startup_and_memory(smoke: tuple[dict[str, Any], Path, str]) -> None:
    (startup,) = ours(smoke[0], "d")
    assert 0 < startup["median"]["run_s"] <= startup["median"]["ready_s"] <= startup["median"]["first_s"]
    (memory,) = ours(smoke[0], "e")
    assert 0 < memory["median"]["idle_rss_mib"] <= memory["median"]["load_rss_mib"] + 1
    assert memory["median"]["processes"] >= 2  # the owner and the front at least


# -- what a clone needs, and what a run writes ---------------------------------------------------------------

# The other benchmarks (the suite is `parse`d): each takes --out, and says where it writes by default.
OTHERS = [
    "fronts.py",
    "flask_migration.py",
    "shm_roundtrip.py",
    "gpu/resnet50.py",
    "ray_scale.py",
    "ray_transfer.py",
    "ray_serve_proxy.py",  # --help works without ray[serve]; a run exits saying it needs it
]


def ignored_by_git(path: Path) -> bool:
    done = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=ROOT, capture_output=True, timeout=30)
    return done.returncode == 0


def test_results_go_to_an_ignored_folder_unless_asked() -> None:
    assert parse([]).out == LOCAL_RESULTS and ignored_by_git(LOCAL_RESULTS / "suite.json")
    assert parse(["--out", "benchmarks/results"]).out == Path("benchmarks/results")
    assert not ignored_by_git(RESULTS / "suite.json")  # the figures kept, when asked for
    for script in OTHERS:
        done = subprocess.run(
            [sys.executable, f"benchmarks/{script}", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert "(default benchmarks/results/local, which git ignores)" in " ".join(done.stdout.split()), script


def test_the_ray_serve_benchmark_says_what_it_lacks() -> None:
    """Ray Serve's extras are no dependency of pybind_serve: without them ray_serve_proxy.py stops at once (no
    cluster started), saying what to install, instead of failing in the middle of a run."""
    probe = subprocess.run([sys.executable, "-c", "import ray.serve"], capture_output=True, timeout=60)
    if probe.returncode == 0:
        pytest.skip("ray[serve] is installed here: the script would run")
    done = subprocess.run(
        [sys.executable, "benchmarks/ray_serve_proxy.py", "--seconds", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "needs ray[serve] installed beside pybind_serve" in done.stderr
    assert "PYTHONPATH=/tmp/rayserve-extra" in done.stderr


def test_the_anchors_setup_is_in_the_repository() -> None:
    assert ANCHORS.is_relative_to(ROOT) and (ANCHORS / "setup.sh").is_file()
    assert subprocess.run(["bash", "-n", str(ANCHORS / "setup.sh")], capture_output=True, timeout=30).returncode == 0
    assert (ROOT / ".ci" / "perf_analyzer.sh").is_file()  # which setup.sh uses for perf_analyzer
    outside = [
        path.relative_to(ROOT)
        for path in (ROOT / "benchmarks").rglob("*")
        if path.suffix in {".py", ".sh", ".md"} and "shared/anchors" in path.read_text()
    ]
    assert not outside, f"these still use the shared folder beside the repository: {outside}"


def test_the_ceiling_answers_kserve_clients() -> None:
    """The ceiling's app, started as the suite starts it, serves add_sub to a KServe v2 client."""
    command = SYSTEMS["ceiling"].command(Tools(perf_analyzer=""))
    process = subprocess.Popen(command.argv, cwd=command.cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        with ModelClient(f"127.0.0.1:{command.http_port}", "add_sub", timeout_s=10) as client:
            client.wait_for_model(timeout_s=30)
            outputs = client.infer_batch(
                a=np.ones((2, 16), np.float32), b=np.arange(16, dtype=np.float32)[None] * [[1], [2]]
            )
        assert outputs["add"].shape == (2, 16) and outputs["sub"][1].tolist() == [1.0 - 2 * i for i in range(16)]
    finally:
        process.terminate()
        assert wait_until(lambda: process.poll() is not None, 10)
        process.communicate(timeout=10)
