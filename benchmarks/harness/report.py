"""Figures gathered over the repetitions, their medians, the ratios of pybind_serve to each anchor, and the
one Markdown table (printed, and written with the JSON to the results folder)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from .scenarios import IDEAL_SLEEPY_REQ_S
from .systems import OURS

STARTUP, MEMORY = "startup", "memory"
# Which figures a row's ratio column shows, by scenario (the JSON holds every ratio).
SHOWN_RATIOS = {
    "d": (("ready_s", "ready"), ("first_s", "first answer")),
    "e": (("idle_rss_mib", "idle"), ("load_rss_mib", "under load")),
}
THROUGHPUT_RATIOS = (("req_s", "req/s"), ("p50_ms", "p50"))


@dataclass
class Row:
    """One system through one front in one case: the figures of each repetition, and what went wrong."""

    scenario: str
    case: str
    system: str
    front: str
    generator: str
    runs: list[dict[str, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    not_applicable: str = ""

    @property
    def label(self) -> str:
        return f"{self.system} {self.front}".strip()

    @property
    def median(self) -> dict[str, float]:
        keys = self.runs[0].keys() if self.runs else ()
        return {key: statistics.median(run[key] for run in self.runs) for key in keys}

    @property
    def status(self) -> str:
        return "n/a" if self.not_applicable else "ok" if self.runs else "error"


class Results:
    """Every row, in the order first seen (the plan's order within a system, systems in the order run)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str, str], Row] = {}

    def row(self, scenario: str, case: str, system: str, front: str = "", generator: str = "") -> Row:
        key = (case, system, front)
        if key not in self.rows:
            self.rows[key] = Row(scenario, case, system, front, generator)
        return self.rows[key]

    def ordered(self) -> list[Row]:
        """Rows by scenario, then case (as planned), ours before the anchors."""
        cases = list(dict.fromkeys(row.case for row in self.rows.values()))
        return sorted(
            self.rows.values(), key=lambda r: (r.scenario, cases.index(r.case), r.system != OURS)
        )  # sorted() is stable: within a system, fronts keep their order

    def counterpart(self, row: Row) -> Row | None:
        """Our row to compare an anchor's row with: same case, same front and load generator."""
        ours = self.rows.get((row.case, OURS, row.front))
        return ours if row.system != OURS and ours is not None and ours.runs and row.runs else None

    def ratios(self, row: Row) -> dict[str, float]:
        """pybind_serve's median ÷ this anchor's, for every figure both have."""
        ours = self.counterpart(row)
        if ours is None:
            return {}
        mine, theirs = ours.median, row.median
        return {key: mine[key] / theirs[key] for key in mine.keys() & theirs.keys() if theirs[key]}

    def our_errors(self) -> list[str]:
        ours = [row for row in self.rows.values() if row.system == OURS]
        return [f"{row.case}, {row.label}: {error}" for row in ours for error in row.errors]

    def as_json(self) -> list[dict[str, Any]]:
        return [
            {
                "scenario": row.scenario,
                "case": row.case,
                "system": row.system,
                "front": row.front,
                "generator": row.generator,
                "status": row.status,
                "note": row.not_applicable,
                "median": row.median,
                "runs": row.runs,
                "errors": row.errors,
                "ratio_ours_to_this": self.ratios(row),
            }
            for row in self.ordered()
        ]


def table(results: Results) -> str:
    lines = [
        "| scenario | system | req/s | p50 ms | p99 ms | other | pybind_serve ÷ this |",
        "| --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for row in results.ordered():
        cells = figure_cells(row)
        ratio = ratio_cell(results, row)
        lines.append(f"| {row.scenario} {row.case} | {row.label} | {' | '.join(cells)} | {ratio} |")
    return "\n".join(lines)


def figure_cells(row: Row) -> list[str]:
    """req/s, p50, p99 and "other" cells of a row."""
    if row.status == "n/a":
        return [row.not_applicable, "", "", ""]
    if row.status == "error":
        return ["error", "", "", first_line(row.errors[-1])]
    figures, partial = row.median, f" ({len(row.runs)} of {len(row.runs) + len(row.errors)} runs)"
    other = other_cell(row.scenario, figures) + (partial if row.errors else "")
    if row.scenario in SHOWN_RATIOS:
        return ["", "", "", other]
    return [f"{figures['req_s']:,.1f}", f"{figures['p50_ms']:.2f}", f"{figures['p99_ms']:.2f}", other]


def other_cell(scenario: str, figures: dict[str, float]) -> str:
    if scenario == "c":
        return f"efficiency {figures['req_s'] / IDEAL_SLEEPY_REQ_S:.0%}"
    if scenario == "d":
        run = f"run() {figures['run_s']:.2f} s, " if "run_s" in figures else ""
        ready, first, spawn = figures["ready_s"], figures["first_s"], figures["spawn_ready_s"]
        return f"{run}→ ready {ready:.2f} s, → first answer {first:.2f} s (process start → ready {spawn:.2f} s)"
    if scenario == "e":
        idle, load = figures["idle_rss_mib"], figures["load_rss_mib"]
        pss = f"PSS {figures['idle_pss_mib']:.0f} / {figures['load_pss_mib']:.0f}"
        count = f"{figures['processes']:.0f} process" + ("" if figures["processes"] == 1 else "es")
        return f"RSS idle {idle:.0f} MiB, peak under load {load:.0f} MiB ({pss}; {count})"
    return ""


def ratio_cell(results: Results, row: Row) -> str:
    if row.system == OURS:
        return ""
    ratios = results.ratios(row)
    if not ratios:
        ours = results.rows.get((row.case, OURS, row.front))
        return ours.not_applicable if ours is not None and ours.not_applicable else "—"
    shown = SHOWN_RATIOS.get(row.scenario, THROUGHPUT_RATIOS)
    return ", ".join(f"{name} {ratios[key]:.2f}x" for key, name in shown if key in ratios)


def first_line(text: str) -> str:
    return text.strip().splitlines()[0][:120].replace("|", "/") if text.strip() else "?"
