"""The load generator for every KServe server: NVIDIA's perf_analyzer, its figures read from its summary.

Each run measures three windows of ``case.window_s`` and reports their average; the stability check is
turned off (``--stability-percentage 1000``) so that a run always takes the same time on a noisy machine,
which the suite makes up for by repeating each run and keeping the median.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from .scenarios import Case, MeasureError

THROUGHPUT = re.compile(r"Throughput: ([\d.]+) infer/sec")
P50 = re.compile(r"p50 latency: (\d+) usec")
P99 = re.compile(r"p99 latency: (\d+) usec")


def command(binary: str, case: Case, protocol: str, url: str) -> list[str]:
    """The perf_analyzer command line that loads ``case`` on the server at ``url`` (``host:port``)."""
    argv = [binary, "-m", case.model, "-i", protocol, "-u", url]
    for shape in case.shapes:
        argv += ["--shape", shape]
    argv += ["--concurrency-range", str(case.concurrency)]
    argv += ["--measurement-interval", str(max(100, int(case.window_s * 1000)))]
    argv += ["--max-trials", "3", "--stability-percentage", "1000"]
    if case.shm_bytes:
        argv += ["--shared-memory", "system", "--output-shared-memory-size", str(case.shm_bytes)]
    return argv


def parse(output: str) -> dict[str, float]:
    """Throughput (req/s) and p50/p99 latency (ms) from perf_analyzer's client summary."""
    throughput, p50, p99 = THROUGHPUT.search(output), P50.search(output), P99.search(output)
    if not (throughput and p50 and p99):
        raise MeasureError.with_output("perf_analyzer gave no figures", output)
    return {
        "req_s": float(throughput.group(1)),
        "p50_ms": int(p50.group(1)) / 1000,
        "p99_ms": int(p99.group(1)) / 1000,
    }


def measure(binary: str, case: Case, protocol: str, url: str) -> dict[str, float]:
    """Run perf_analyzer on ``case``; raises `MeasureError` when it fails or reports no figures."""
    argv = command(binary, case, protocol, url)
    timeout_s = 60 + 10 * case.window_s
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise MeasureError(f"perf_analyzer ran past {timeout_s:.0f} s: {' '.join(argv)}") from None
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise MeasureError.with_output(f"perf_analyzer exited {done.returncode}", output)
    return parse(output)


def works(binary: str) -> bool:
    """Whether ``binary`` is a working perf_analyzer (the PyPI package "perf-analyzer" is a placeholder)."""
    if not os.access(binary, os.X_OK):
        return False
    try:
        done = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "usage" in (done.stdout + done.stderr).lower() and "--concurrency-range" in done.stdout + done.stderr


def find(candidates: list[str | Path | None]) -> str | None:
    """The first working perf_analyzer among ``candidates``, then ``perf_analyzer`` on PATH."""
    for candidate in [*candidates, shutil.which("perf_analyzer")]:
        if candidate and Path(candidate).is_file() and works(str(candidate)):
            return str(candidate)
    return None
