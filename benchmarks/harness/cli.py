"""The command line of ``python benchmarks/suite.py``: options, what to install or find, and the results files."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from . import perf_analyzer
from .report import Results, table
from .runner import Plan, run_all, stderr
from .scenarios import KINDS, plan
from .systems import ANCHORS, BASELINE, ROOT, SYSTEMS, Tools, baseline

RESULTS = ROOT / "benchmarks" / "results"  # the figures kept in the repository, written only when asked (--out)
LOCAL_RESULTS = RESULTS / "local"  # a run's own, by default: git ignores it


@dataclass(frozen=True)
class Defaults:
    repeat: int
    seconds: float
    identity_mib: float
    systems: str


FULL = Defaults(repeat=3, seconds=1.0, identity_mib=16.0, systems="pybind_serve,pytriton,ceiling,litserve")
SMOKE = Defaults(repeat=1, seconds=0.25, identity_mib=1.0, systems="pybind_serve")


@dataclass(frozen=True)
class Options:
    smoke: bool
    repeat: int
    seconds: float
    identity_mib: float
    systems: tuple[str, ...]
    scenarios: frozenset[str]
    out: Path
    name: str
    setup: bool
    perf_analyzer: str | None
    anchor_venv: Path
    baseline: Path | None = None


def parse(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="benchmarks/suite.py", description="pybind_serve beside its anchors.")
    parser.add_argument("--smoke", action="store_true", help="seconds: our server only, tiny windows, 1 MiB tensors")
    parser.add_argument("--repeat", type=int, help="starts of each system; figures are medians (3; smoke 1)")
    parser.add_argument("--seconds", type=float, help="perf_analyzer window, three per figure (1.0; smoke 0.25)")
    parser.add_argument("--identity-mib", type=float, help="scenario b tensor size (16; smoke 1)")
    parser.add_argument("--systems", help=f"comma-separated, of {','.join(SYSTEMS)} (all; smoke pybind_serve)")
    parser.add_argument("--scenarios", default="a,b,c,d,e", help="comma-separated, of a,b,c,d,e (all)")
    parser.add_argument(
        "--out",
        type=Path,
        default=LOCAL_RESULTS,
        help="results folder (benchmarks/results/local, which git ignores; --out benchmarks/results to update the "
        "figures kept in the repository)",
    )
    parser.add_argument("--name", help="results file stem (suite; smoke suite-smoke)")
    parser.add_argument("--no-setup", dest="setup", action="store_false", help="install nothing; skip what is missing")
    parser.add_argument("--perf-analyzer", help="a working perf_analyzer binary (else $PERF_ANALYZER, PATH, ...)")
    parser.add_argument("--anchor-venv", type=Path, default=Path(os.environ.get("ANCHOR_VENV", "/tmp/anchor-venv")))
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a checkout of another pybind_serve version (e.g. `git worktree add /tmp/base main`), run beside "
        "this one as the system 'baseline': a hot-path change's before and after in one run",
    )
    args = parser.parse_args(argv)
    defaults = SMOKE if args.smoke else FULL
    systems = tuple((args.systems or defaults.systems).split(","))
    unknown = [name for name in systems if name not in SYSTEMS]
    if unknown:
        parser.error(f"unknown systems {unknown}: choose among {list(SYSTEMS)}")
    return Options(
        smoke=args.smoke,
        repeat=args.repeat or defaults.repeat,
        seconds=args.seconds or defaults.seconds,
        identity_mib=args.identity_mib or defaults.identity_mib,
        systems=systems,
        scenarios=frozenset(args.scenarios.split(",")),
        out=args.out,
        name=args.name or ("suite-smoke" if args.smoke else "suite"),
        setup=args.setup,
        perf_analyzer=args.perf_analyzer,
        anchor_venv=args.anchor_venv,
        baseline=args.baseline.resolve() if args.baseline else None,
    )


def anchor_python(options: Options) -> str | None:
    """The anchors' interpreter, with PyTriton and LitServe; ``benchmarks/anchors/setup.sh`` installs them when
    missing."""
    python = options.anchor_venv / "bin" / "python"
    if has_anchors(python):
        return str(python)
    setup = ANCHORS / "setup.sh"
    if not options.setup:
        stderr(f"no anchors in {options.anchor_venv} (--no-setup): PyTriton and LitServe are skipped")
        return None
    stderr(f"installing the anchors into {options.anchor_venv} with {setup} (about a minute)")
    env = {**os.environ, "ANCHOR_VENV": str(options.anchor_venv)}
    subprocess.run(["bash", str(setup)], env=env, stdout=sys.stderr, check=False)
    return str(python) if has_anchors(python) else None


def has_anchors(python: Path) -> bool:
    if not python.exists():
        return False
    return subprocess.run([python, "-c", "import pytriton, litserve"], capture_output=True).returncode == 0


def anchor_env(python: str) -> dict[str, str]:
    """PyTriton's Triton loads libpython: ``LD_LIBRARY_PATH`` must hold its directory."""
    code = "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"
    libdir = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    current = os.environ.get("LD_LIBRARY_PATH")
    return {"LD_LIBRARY_PATH": f"{libdir}:{current}" if current else libdir}


def find_perf_analyzer(options: Options) -> str:
    """A working perf_analyzer: given, $PERF_ANALYZER, in a known virtualenv, on PATH; else installed here."""
    venv = Path(sys.prefix)
    candidates: list[str | Path | None] = [options.perf_analyzer, os.environ.get("PERF_ANALYZER")]
    candidates += [venv / "pabin/perf_analyzer", ROOT / ".venv/pabin/perf_analyzer"]
    candidates += [options.anchor_venv / "pabin/perf_analyzer"]
    found = perf_analyzer.find(candidates)
    if found is None and options.setup and sys.prefix != sys.base_prefix:
        stderr(f"installing perf_analyzer into {venv}/pabin with .ci/perf_analyzer.sh")
        done = subprocess.run(["bash", str(ROOT / ".ci/perf_analyzer.sh"), str(venv)], capture_output=True, text=True)
        found = perf_analyzer.find([done.stdout.strip().splitlines()[-1] if done.stdout.strip() else None])
    if found is None:
        sys.exit("no working perf_analyzer: run `bash .ci/perf_analyzer.sh .venv`, or pass --perf-analyzer")
    return found


def resolve(options: Options) -> tuple[Tools, list[str]]:
    """The tools, and the systems that can run with them."""
    wanted = [name for name in options.systems if SYSTEMS[name].needs_anchors]
    python = anchor_python(options) if wanted else None
    systems = [name for name in options.systems if python or not SYSTEMS[name].needs_anchors]
    env = anchor_env(python) if python else {}
    return Tools(find_perf_analyzer(options), python, env), systems


def interrupt_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so that every server started is stopped on the way out."""

    def handler(number: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def write(options: Options, results: Results, meta: dict[str, Any]) -> str:
    """``<out>/<name>.json`` and ``<out>/<name>.md``; returns the Markdown table."""
    options.out.mkdir(parents=True, exist_ok=True)
    rendered = table(results)
    document = {**meta, "rows": results.as_json(), "table": rendered}
    (options.out / f"{options.name}.json").write_text(json.dumps(document, indent=2, default=str) + "\n")
    (options.out / f"{options.name}.md").write_text(summary(meta, rendered))
    return rendered


def summary(meta: dict[str, Any], rendered: str) -> str:
    machine = meta["machine"]
    return (
        f"# Benchmarks, {meta['when']}{' (smoke)' if meta['smoke'] else ''}\n\n"
        f"{machine['cpus']} CPUs, Python {machine['python']}, load average {machine['load_average']} at the start; "
        f"{meta['options']['repeat']} starts of each system, each figure the median over them; "
        f"{meta['elapsed_s']:.0f} s in all. Generated by `python benchmarks/suite.py` (benchmarks/README.md).\n\n"
        "Ratios are pybind_serve's median ÷ the anchor's, through the same front and load generator in the "
        "same run: above 1 is better for req/s, below 1 better for latency, startup and memory. Batching "
        "efficiency (c) = req/s ÷ 3,200 (64 per batch, 20 ms each).\n\n"
        f"{rendered}\n"
    )


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    interrupt_on_sigterm()
    started, when = time.monotonic(), time.strftime("%Y-%m-%dT%H:%M:%S")
    load_average = f"{os.getloadavg()[0]:.2f}"
    tools, names = resolve(options)
    log_dir = Path(tempfile.mkdtemp(prefix="pybind-serve-bench-"))
    cases = plan(options.seconds, options.identity_mib, frozenset(k for k in KINDS if k[0] in options.scenarios))
    results = Results()
    systems = [SYSTEMS[name] for name in names]
    if options.baseline is not None:
        systems.insert(1, baseline(options.baseline))
        names.insert(1, BASELINE)
    chosen = Plan(systems, cases, options.repeat, options.scenarios, log_dir)
    try:
        run_all(chosen, tools, results, stderr)
    except KeyboardInterrupt:
        stderr(f"interrupted: every server started was stopped; logs in {log_dir}")
        return 130
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "load_average": load_average}
    meta = {"when": when, "smoke": options.smoke, "elapsed_s": time.monotonic() - started, "machine": machine,
            "options": asdict(options), "tools": asdict(tools), "systems": names}  # fmt: skip
    print(write(options, results, meta))
    errors = results.our_errors()
    if errors:
        stderr("pybind_serve failed:\n" + "\n".join(errors) + f"\nlogs in {log_dir}")
        return 1
    with contextlib.suppress(OSError):
        shutil.rmtree(log_dir)
    return 0
