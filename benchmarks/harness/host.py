"""What a benchmark ran on (cores, CPU model, memory, Python, platform, load average), and writing its results."""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["add_output_options", "describe_host", "write_results"]


def describe_host(**extra: Any) -> dict[str, Any]:
    """This host as a results file records it, with ``extra`` entries (versions of what the benchmark uses)."""
    model = ""
    try:
        with open("/proc/cpuinfo") as file:
            model = next((line.split(":", 1)[1].strip() for line in file if line.startswith("model name")), "")
    except OSError:
        pass
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "memory_gib": round(memory_gib, 1),
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **extra,
    }


def add_output_options(parser: argparse.ArgumentParser, name: str) -> None:
    """``--name`` (the results files' stem, ``name`` by default) and ``--out`` (benchmarks/results/local)."""
    parser.add_argument("--name", default=name, help="the results files' name (<name>.json, .md)")
    parser.add_argument(
        "--out",
        default=str(Path(__file__).resolve().parents[1] / "results" / "local"),
        help="results folder (default benchmarks/results/local, which git ignores)",
    )


def write_results(out: str | Path, name: str, document: dict[str, Any], text: str) -> None:
    """``<out>/<name>.json`` (the document) and ``<out>/<name>.md`` (its table), and the table printed."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(document, indent=2) + "\n")
    (folder / f"{name}.md").write_text(text)
    print(text + f"\nwritten to {folder / name}.json and .md")
