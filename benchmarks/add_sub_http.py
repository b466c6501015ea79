"""add_sub over HTTP and gRPC at concurrency 1, 8 and 64: throughput and p50/p99 latency, beside the bare
uvicorn ceiling.

    python benchmarks/add_sub_http.py [--perf-analyzer PATH] [--seconds 3] [--repeat 3] [--no-ceiling]
                                      [--protocols http,grpc]

The load comes from perf_analyzer (``$PERF_ANALYZER``, ``perf_analyzer`` on PATH, or the one
``.ci/perf_analyzer.sh`` puts in ``.venv/pabin``), ``-i http`` or ``-i grpc`` against one add_sub server. The
ceiling is ``../shared/anchors/ceiling_app.py`` (add_sub computed inline in a Starlette handler: no batching, no
processes; HTTP only), run in the same session so that all are compared on the same machine minute; each figure
is the median of ``--repeat`` runs. Results go to ``benchmarks/results/add_sub_http.json`` and a Markdown table
on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
CEILING = ROOT.parent / "shared" / "anchors" / "ceiling_app.py"
RESULTS = ROOT / "benchmarks" / "results"
CONCURRENCY = (1, 8, 64)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_perf_analyzer(given: str | None) -> str:
    for candidate in (
        given,
        os.environ.get("PERF_ANALYZER"),
        shutil.which("perf_analyzer"),
        ROOT / ".venv/pabin/perf_analyzer",
    ):
        if candidate and Path(candidate).exists():
            return str(candidate)
    sys.exit("no perf_analyzer: run `bash .ci/perf_analyzer.sh .venv` or pass --perf-analyzer")


def wait_ready(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"server on port {port} did not become ready")


@contextlib.contextmanager
def running(command: list[str], port: int, cwd: Path = ROOT) -> Iterator[None]:
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_ready(port)
        yield
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def measure(perf_analyzer: str, protocol: str, port: int, concurrency: int, seconds: float) -> dict[str, float]:
    command = [
        perf_analyzer, "-m", "add_sub", "-i", protocol, "-u", f"127.0.0.1:{port}", "--shape", "a:16", "--shape", "b:16",
        "--concurrency-range", str(concurrency), "--measurement-interval", str(int(seconds * 1000)),
        "--max-trials", "10", "--stability-percentage", "50",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120 + 20 * seconds)
    out = done.stdout + done.stderr
    throughput = re.search(r"Throughput: ([\d.]+) infer/sec", out)
    p50 = re.search(r"p50 latency: (\d+) usec", out)
    p99 = re.search(r"p99 latency: (\d+) usec", out)
    if not (throughput and p50 and p99):
        raise RuntimeError(f"perf_analyzer gave no figures:\n{out}")
    return {"req_s": float(throughput.group(1)), "p50_ms": int(p50.group(1)) / 1000, "p99_ms": int(p99.group(1)) / 1000}


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(run[key] for run in runs), 3) for key in runs[0]}


def bench_system(
    name: str, command: list[str], ports: dict[str, int], cwd: Path, args: argparse.Namespace
) -> dict[str, dict[int, dict[str, float]]]:
    """Start ``command`` (ready once HTTP ``ports["http"]`` says so) and load it over each protocol in ``ports``."""
    results: dict[str, dict[int, dict[str, float]]] = {}
    with running(command, ports["http"], cwd):
        for protocol, port in ports.items():
            label = f"{name} {protocol}"
            results[label] = {}
            for concurrency in CONCURRENCY:
                runs = [
                    measure(args.perf_analyzer, protocol, port, concurrency, args.seconds) for _ in range(args.repeat)
                ]
                results[label][concurrency] = median_of(runs)
                print(f"  {label} c={concurrency}: {results[label][concurrency]}", file=sys.stderr, flush=True)
    return results


def table(results: dict[str, dict[int, dict[str, float]]]) -> str:
    lines = [
        "| system | concurrency | req/s | p50 ms | p99 ms | req/s vs ceiling |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    ceiling = results.get("ceiling", {})
    for system, by_concurrency in results.items():
        for concurrency, figures in by_concurrency.items():
            ratio = f"{figures['req_s'] / ceiling[concurrency]['req_s']:.2f}" if concurrency in ceiling else "-"
            req_s, p50, p99 = figures["req_s"], figures["p50_ms"], figures["p99_ms"]
            lines.append(f"| {system} | {concurrency} | {req_s:.0f} | {p50:.2f} | {p99:.2f} | {ratio} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--perf-analyzer")
    parser.add_argument("--seconds", type=float, default=3.0, help="perf_analyzer measurement window")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (the median is reported)")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the bare uvicorn ceiling")
    parser.add_argument("--protocols", default="http,grpc", help="which of pybind_serve's fronts to load")
    args = parser.parse_args()
    args.perf_analyzer = find_perf_analyzer(args.perf_analyzer)
    ports = {protocol: free_port() for protocol in args.protocols.split(",")}
    ports.setdefault("http", free_port())  # readiness is asked over HTTP
    server = [sys.executable, "examples/add_sub/server.py", "--metrics-port", str(free_port())]
    server += ["--http-port", str(ports["http"]), "--grpc-port", str(ports.get("grpc", 0))]
    loaded = {protocol: ports[protocol] for protocol in args.protocols.split(",")}
    results = bench_system("pybind_serve", server, loaded, ROOT, args)
    if not args.no_ceiling and CEILING.exists():
        port = free_port()
        uvicorn = [
            sys.executable,
            "-m",
            "uvicorn",
            "ceiling_app:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        results["ceiling"] = bench_system("ceiling", uvicorn, {"http": port}, CEILING.parent, args)["ceiling http"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "add_sub_http.json").write_text(
        json.dumps({"when": time.strftime("%Y-%m-%dT%H:%M:%S"), "results": results}, indent=2)
    )
    print(table(results))


if __name__ == "__main__":
    main()
