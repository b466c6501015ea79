"""Front replicas: add_sub (or sleepy) served by 1, 2, 4, 8 front processes (`Serve(fronts=N)`), in one run.

Load comes from ``--clients`` perf_analyzer processes at once (each its own connections: perf_analyzer's gRPC
client shares one channel, so one process would reach one front), each at ``--concurrency`` / ``--clients``
requests in flight; their throughputs are summed. Front CPU is read from /proc over the same window, summed
over the fronts. Ratios are to one front, same protocol, same run.

    python benchmarks/fronts.py --fronts 1,2,4,8                # a many-core host
    python benchmarks/fronts.py --fronts 1,2 --seconds 1 --clients 2 --concurrency 32   # smoke, 2 CPUs

Writes ``<out>/<name>.json`` and ``.md`` (``--name``, default fronts_scaling).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks.harness.procfs import stat_fields  # noqa: E402
from pybind_serve import ModelConfig, Serve, Tensor, batch  # noqa: E402

SLEEPY_MS, SLEEPY_BATCH = 20.0, 64


@batch
def add_sub(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    return {"add": a + b, "sub": a - b}


@batch
def sleepy(x: np.ndarray) -> dict[str, np.ndarray]:
    time.sleep(SLEEPY_MS / 1000)  # a fixed cost per batch: what matters is how full the batches are
    return {"y": x * 2}


def bind(serve: Serve, model: str, instances: int | None) -> None:
    if model == "add_sub":
        inputs = [Tensor("a", np.float32, (-1,)), Tensor("b", np.float32, (-1,))]
        outputs = [Tensor("add", np.float32, (-1,)), Tensor("sub", np.float32, (-1,))]
        serve.bind("add_sub", add_sub, inputs, outputs, config=ModelConfig(max_batch_size=64, instances=instances))
    else:
        config = ModelConfig(max_batch_size=SLEEPY_BATCH, instances=instances)
        serve.bind("sleepy", sleepy, [Tensor("x", np.float32, (4,))], [Tensor("y", np.float32, (4,))], config=config)


def cpu_seconds(pid: int) -> float:
    fields = stat_fields(pid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def perf_analyzer(
    binary: str, model: str, protocol: str, url: str, concurrency: int, seconds: float
) -> subprocess.Popen[str]:
    shapes = ["--shape", "a:16", "--shape", "b:16"] if model == "add_sub" else []
    argv = [binary, "-m", model, "-i", protocol, "-u", url, *shapes]
    argv += ["--concurrency-range", str(concurrency), "--measurement-interval", str(int(seconds * 1000))]
    argv += ["--max-trials", "3", "--stability-percentage", "1000"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def throughput(output: str) -> float:
    for line in output.splitlines():
        if "Throughput:" in line and "infer/sec" in line:
            return float(line.split("Throughput:")[1].split("infer/sec")[0])
    raise RuntimeError(f"perf_analyzer gave no throughput:\n{output[-2000:]}")


def measure(serve: Serve, protocol: str, args: argparse.Namespace) -> dict[str, Any]:
    url = f"127.0.0.1:{serve.http_port if protocol == 'http' else serve.grpc_port}"
    assert serve._fronts is not None
    fronts = serve._fronts.pids
    per_client = max(1, args.concurrency // args.clients)
    clients = [
        perf_analyzer(args.perf_analyzer, args.model, protocol, url, per_client, args.seconds)
        for _ in range(args.clients)
    ]
    time.sleep(args.seconds)  # perf_analyzer's warm-up and first window: CPU is read over the rest
    cpu0, t0 = sum(cpu_seconds(pid) for pid in fronts), time.monotonic()
    outputs = [client.communicate(timeout=60 + 10 * args.seconds)[0] for client in clients]
    cpu1, t1 = sum(cpu_seconds(pid) for pid in fronts), time.monotonic()
    for client, output in zip(clients, outputs, strict=True):
        if client.returncode != 0:
            raise RuntimeError(f"perf_analyzer exited {client.returncode}:\n{output[-2000:]}")
    return {
        "req_s": sum(throughput(output) for output in outputs),
        "front_cpu_percent": (cpu1 - cpu0) / (t1 - t0) * 100,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fronts", default="1,2,4,8")
    parser.add_argument(
        "--model", default="add_sub", choices=["add_sub", "sleepy"], help="sleepy: 20 ms per batch of up to 64"
    )
    parser.add_argument("--protocols", default="http,grpc")
    parser.add_argument("--concurrency", type=int, default=256, help="requests in flight, over all clients")
    parser.add_argument("--clients", type=int, default=8, help="perf_analyzer processes")
    parser.add_argument("--seconds", type=float, default=2.0, help="perf_analyzer window (three per figure)")
    parser.add_argument("--instances", type=int, default=None, help="worker processes (None: a thread)")
    parser.add_argument("--perf-analyzer", default=os.environ.get("PERF_ANALYZER") or shutil.which("perf_analyzer"))
    parser.add_argument(
        "--out",
        type=Path,
        default=HERE / "results" / "local",
        help="results folder (default benchmarks/results/local, which git ignores)",
    )
    parser.add_argument("--name", default="fronts_scaling")
    args = parser.parse_args()
    if not args.perf_analyzer:
        parser.error("no perf_analyzer: pass --perf-analyzer or set PERF_ANALYZER")

    scenario = {
        "add_sub": "add_sub (FP32[16] x2), max_batch_size 64",
        "sleepy": f"sleepy: {SLEEPY_MS:g} ms per batch of up to {SLEEPY_BATCH} (FP32[4]); ideal "
        f"{SLEEPY_BATCH / SLEEPY_MS * 1000:.0f} req/s per worker",
    }[args.model]
    result: dict[str, Any] = {
        "scenario": scenario,
        "cpus": os.cpu_count(),
        "machine": platform.node(),
        "options": {k: str(v) for k, v in vars(args).items()},
        "runs": [],
    }
    for count in [int(n) for n in args.fronts.split(",")]:
        serve = Serve(http_port=0, grpc_port=0, metrics_port=None, fronts=count)
        with serve:
            bind(serve, args.model, args.instances)
            serve.run()
            for protocol in args.protocols.split(","):
                figures = measure(serve, protocol, args)
                run = {"fronts": count, "protocol": protocol, **figures}
                result["runs"].append(run)
                print(json.dumps(run), flush=True)
    for run in result["runs"]:
        base = next(r for r in result["runs"] if r["protocol"] == run["protocol"] and r["fronts"] == 1)
        run["ratio_to_one_front"] = run["req_s"] / base["req_s"] if base else None

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# Front replicas: {scenario}, with N front processes",
        "",
        f"{result['cpus']} CPUs; {args.clients} perf_analyzer processes, {args.concurrency} requests in flight in "
        f"all; worker: {'a thread' if args.instances is None else f'{args.instances} processes'}; "
        f"{args.seconds:g} s windows.",
        "",
        "| fronts | protocol | req/s | ratio to 1 front | front CPU % (all fronts) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for run in result["runs"]:
        lines.append(
            f"| {run['fronts']} | {run['protocol']} | {run['req_s']:.0f} | {run['ratio_to_one_front']:.2f} | "
            f"{run['front_cpu_percent']:.0f} |"
        )
    (args.out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
