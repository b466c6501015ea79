"""The repetitions. Each repetition starts every system in turn, measures its startup (d) and idle memory (e),
loads it with each of its cases (a, b, c) while sampling its memory, and stops it: so all systems share the same
minutes of a noisy machine, and each figure is a median over as many starts as repetitions."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from . import httpload, perf_analyzer
from .launch import Running, launched
from .procfs import PeakSampler
from .report import MEMORY, STARTUP, Results
from .scenarios import NOT_SUPPORTED, Case, MeasureError
from .systems import Front, System, Tools

MIB = 1024


@dataclass(frozen=True)
class Plan:
    systems: list[System]
    cases: list[Case]
    repeat: int
    scenarios: frozenset[str]  # of "a" to "e"
    log_dir: Path


def run_all(plan: Plan, tools: Tools, results: Results, say: Callable[[str], None]) -> None:
    for repetition in range(plan.repeat):
        for system in plan.systems:
            say(f"[{repetition + 1}/{plan.repeat}] {system.name}")
            started = time.monotonic()
            run_once(system, plan, tools, results, plan.log_dir / f"{system.name}-{repetition + 1}.log", say)
            say(f"  ({time.monotonic() - started:.0f} s, stop included)")


def run_once(system: System, plan: Plan, tools: Tools, results: Results, log: Path, say: Callable[[str], None]) -> None:
    """One start of ``system``: every figure of it, once. A start that fails counts as an error of each."""
    loads = [(case, front) for case in plan.cases for front in system.fronts if case.kind in front.kinds]
    try:
        with launched(system, tools, log) as running:
            idle = running.tree.memory_kib()
            if system.handshake and "d" in plan.scenarios:
                results.row("d", STARTUP, system.name).runs.append(running.startup)
                say(f"  startup: {running.startup}")
            peaks = [measure_load(running, case, front, tools, results, say) for case, front in loads]
            if "e" in plan.scenarios:
                under_a = [peak for (case, _), peak in zip(loads, peaks, strict=True) if case.kind == "a" and peak]
                results.row("e", MEMORY, system.name).runs.append(memory_figures(idle, under_a))
    except MeasureError as error:
        say(f"  {system.name} failed: {error}")
        for case, front in loads:
            results.row(case.scenario, case.name, system.name, front.label, front.generator).errors.append(str(error))
        if system.handshake and "d" in plan.scenarios:
            results.row("d", STARTUP, system.name).errors.append(str(error))


def measure_load(
    running: Running, case: Case, front: Front, tools: Tools, results: Results, say: Callable[[str], None]
) -> dict[str, int] | None:
    """Load ``running`` with ``case`` through ``front`` once; returns the peak memory seen meanwhile."""
    row = results.row(case.scenario, case.name, running.system.name, front.label, front.generator)
    if case.shm_bytes and not supports_shared_memory(running):
        row.not_applicable = NOT_SUPPORTED
        return None
    with PeakSampler(running.tree) as sampler:
        try:
            figures = load(running, case, front, tools)
        except MeasureError as error:
            row.errors.append(str(error))
            say(f"  {row.label} {case.name}: {error}")
            return None
    row.runs.append({**figures, "rss_mib": sampler.peak["rss_kib"] / MIB})
    say(f"  {row.label} {case.name}: " + ", ".join(f"{k} {v:,.2f}" for k, v in row.runs[-1].items()))
    return sampler.peak


def load(running: Running, case: Case, front: Front, tools: Tools) -> dict[str, float]:
    if front.generator == "perf_analyzer":
        url = f"127.0.0.1:{running.port(front.protocol)}"
        return perf_analyzer.measure(tools.perf_analyzer, case, front.protocol, url)
    path, body = running.system.request(case.model)
    return httpload.measure(running.http_url, path, body, case.concurrency, 3 * case.window_s)


def supports_shared_memory(running: Running) -> bool:
    """Whether the server lists the KServe system shared memory extension in its metadata (``GET /v2``)."""
    try:
        metadata = httpx.get(f"{running.http_url}/v2", timeout=10).json()
    except (httpx.HTTPError, ValueError):
        return False
    return "system_shared_memory" in metadata.get("extensions", [])


def memory_figures(idle: dict[str, int], under_load: list[dict[str, int]]) -> dict[str, float]:
    """Idle memory, and the peak under scenario a (the load every system runs, so ratios compare alike)."""
    peak = max(under_load, key=lambda p: p["rss_kib"], default=idle)
    return {
        "idle_rss_mib": idle["rss_kib"] / MIB,
        "idle_pss_mib": idle["pss_kib"] / MIB,
        "load_rss_mib": peak["rss_kib"] / MIB,
        "load_pss_mib": peak["pss_kib"] / MIB,
        "processes": idle["processes"],
    }


def stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
