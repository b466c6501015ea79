"""The Flask migration example under load: the plain Flask handler (``before.py``) beside the migrated one
(``after.py``, the model call batched by pybind_serve), requests/s and p50/p99 latency at concurrency 32.

    python benchmarks/flask_migration.py [--seconds 5] [--repeat 3] [--concurrency 32] [--client-processes 4]

The model (``examples/flask_migration/classifier.py``) costs 5 ms per call whatever the batch size and runs
one call at a time, as a model on one GPU does. Both apps run as their users run them (``app.run(threaded=True)``,
Flask's development server) and are loaded by the same closed-loop client: ``--concurrency`` keep-alive
connections spread over ``--client-processes`` processes, so the client is not what limits. "flask alone"
sends the malformed request, answered 400 by the handler before any model call: the ceiling of the Flask
server on this machine. Each figure is the median of ``--repeat`` runs; results go to
``<--out>/flask_migration.json`` (``benchmarks/results/local``, which git ignores; ``--out benchmarks/results``
updates the figures kept) and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "flask_migration"
RESULTS = ROOT / "benchmarks" / "results" / "local"
FLOWER = json.dumps({"features": [5.1, 3.5, 1.4, 0.2]}).encode()
MALFORMED = json.dumps({"features": [5.1, 3.5]}).encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running(script: str, port: int) -> Iterator[None]:
    command = [sys.executable, str(EXAMPLE / script), "--port", str(port)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{script} did not start (exit code {process.poll()})")
            time.sleep(0.05)
        yield
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def answers(port: int) -> bool:
    with contextlib.suppress(OSError, http.client.HTTPException):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        try:
            connection.request("POST", "/predict", FLOWER, {"Content-Type": "application/json"})
            return connection.getresponse().status == 200
        finally:
            connection.close()
    return False


def client_process(port: int, body: bytes, threads: int, start_at: float, stop_at: float) -> list[float]:
    """Latencies (s) of the requests that ``threads`` closed-loop connections complete in [start_at, stop_at)."""
    latencies: list[list[float]] = [[] for _ in range(threads)]

    def loop(mine: list[float]) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        headers = {"Content-Type": "application/json"}
        while (now := time.time()) < stop_at:
            connection.request("POST", "/predict", body, headers)
            response = connection.getresponse()
            response.read()
            if response.status not in (200, 400):
                raise RuntimeError(f"HTTP {response.status}")
            if now >= start_at:
                mine.append(time.time() - now)
        connection.close()

    workers = [threading.Thread(target=loop, args=(mine,)) for mine in latencies]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return [latency for mine in latencies for latency in mine]


def measure(port: int, body: bytes, args: argparse.Namespace) -> dict[str, float]:
    """One run: a warm-up second, then ``args.seconds`` measured."""
    start_at = time.time() + 1.0
    stop_at = start_at + args.seconds
    per_process = [args.concurrency // args.client_processes] * args.client_processes
    per_process[0] += args.concurrency - sum(per_process)
    context = multiprocessing.get_context("spawn")
    with context.Pool(args.client_processes) as pool:
        jobs = [pool.apply_async(client_process, (port, body, n, start_at, stop_at)) for n in per_process]
        latencies = sorted(latency for job in jobs for latency in job.get(timeout=args.seconds + 120))
    return {
        "req_s": len(latencies) / args.seconds,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
    }


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(run[key] for run in runs), 2) for key in runs[0]}


def bench(name: str, script: str, body: bytes, args: argparse.Namespace) -> dict[str, float]:
    port = free_port()
    with running(script, port):
        figures = median_of([measure(port, body, args) for _ in range(args.repeat)])
    print(f"  {name}: {figures}", file=sys.stderr, flush=True)
    return figures


def table(results: dict[str, dict[str, float]], concurrency: int) -> str:
    lines = [
        f"| app (concurrency {concurrency}) | req/s | p50 ms | p99 ms | req/s vs plain Flask |",
        "| --- | --- | --- | --- | --- |",
    ]
    plain = results["plain flask (before.py)"]["req_s"]
    for name, figures in results.items():
        ratio = figures["req_s"] / plain
        lines.append(
            f"| {name} | {figures['req_s']:.0f} | {figures['p50_ms']:.1f} | {figures['p99_ms']:.1f} | {ratio:.1f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured window of each run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (the median is reported)")
    parser.add_argument("--concurrency", type=int, default=32, help="connections in flight")
    parser.add_argument("--client-processes", type=int, default=4, help="processes the connections are spread on")
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results/local, which git ignores)"
    )
    args = parser.parse_args()
    results: dict[str, Any] = {
        "plain flask (before.py)": bench("plain flask", "before.py", FLOWER, args),
        "migrated (after.py)": bench("migrated", "after.py", FLOWER, args),
        "flask alone (400, no model call)": bench("flask alone", "before.py", MALFORMED, args),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    document = {"when": time.strftime("%Y-%m-%dT%H:%M:%S"), "concurrency": args.concurrency, "results": results}
    (args.out / "flask_migration.json").write_text(json.dumps(document, indent=2) + "\n")
    print(table(results, args.concurrency))


if __name__ == "__main__":
    main()
