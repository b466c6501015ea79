"""Scale-out figures of the Ray backend, in one run on this host: a `ray.cluster_utils.Cluster` of worker nodes on
loopback (one CPU each) and perf_analyzer over gRPC.

1. Throughput of a CPU-bound model (a fixed 5 ms or so of pure Python per request, ``max_batch_size=1``) with its
   instances on 1, 2 and 3 worker nodes, one instance per node, on the network transport (as across hosts). All
   nodes share this host's cores: past the cores there are, more nodes cannot add throughput (the front,
   perf_analyzer and Ray's daemons need CPU too), and the report says how many cores there were.
2. The latency an identity model adds on each path, at concurrency 1, small (64 B) and large (1 MiB) tensors:
   the single-host path (a worker process forked by ``Serve``, shared memory), a Ray actor on this host over
   shared memory (``transport="auto"``), and a Ray actor over the network transport, encrypted (CurveZMQ, the
   default) and not (``encrypt=False``).
3. Front replicas (``fronts``): a small identity model (64 B) with two instances per worker node, clients on every
   front at once (one perf_analyzer per front, gRPC, concurrency ``--front-concurrency`` each, requests summed):
   the owner's front alone, then with a replica on one and on two worker nodes (named one by one: they share this
   host), and three fronts of the owner's host (``Serve(fronts=3)``) as the reference. Many cores are needed for
   this to say anything (each front is one process): run it on a host that has them.

    python benchmarks/ray_scale.py [--perf-analyzer PATH] [--seconds 2] [--node-cpus 1]
                                   [--scenarios throughput,latency,fronts] [--out benchmarks/results/local]

The models are this module's functions: the Ray actors import it by name (the repository root is on the owner's
sys.path, which the actors take).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray's nodes on loopback only

import numpy as np

from pybind_serve import ModelConfig, RayBackend, Resources, Serve, Tensor, batch

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
SPIN_ITERATIONS = 150_000  # about 5 ms


@batch
def spin(x):  # type: ignore[no-untyped-def]
    """A fixed amount of pure Python arithmetic per row, about 5 ms on an idle core of the 2-core host this was
    written on (it holds the GIL: one core per instance at most). Work, not time: instances that share a core
    take longer each."""
    total = 0
    for _ in range(len(x)):
        for i in range(SPIN_ITERATIONS):
            total += i * i
    return {"y": x + 1}


@batch
def identity(x):  # type: ignore[no-untyped-def]
    return {"y": x}


IO = ([Tensor("x", np.float32, (-1,))], [Tensor("y", np.float32, (-1,))])


def perf(binary: str, model: str, url: str, shape: int, concurrency: int, window_s: float) -> dict[str, float]:
    sys.path.insert(0, str(ROOT))
    from benchmarks.harness.perf_analyzer import parse

    argv = [binary, "-m", model, "-i", "grpc", "-u", url, "--shape", f"x:{shape}"]
    argv += ["--concurrency-range", str(concurrency), "--measurement-interval", str(int(window_s * 1000))]
    argv += ["--max-trials", "3", "--stability-percentage", "1000"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"perf_analyzer exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return parse(done.stdout + done.stderr)


def served(
    backend: RayBackend | None, model: str, fn: Callable[..., Any], config: ModelConfig, fronts: int = 1
) -> Serve:
    server = Serve(http_port=0, grpc_port=0, metrics_port=None, host=LOOPBACK, backend=backend, fronts=fronts)
    server.bind(model, fn, *IO, config=config)
    return server.run()


def perf_together(binary: str, model: str, urls: list[str], concurrency: int, window_s: float) -> dict[str, Any]:
    """One perf_analyzer per url, all at once: their requests per second summed, and each one's figures."""
    with ThreadPoolExecutor(len(urls)) as pool:
        each = list(pool.map(lambda url: perf(binary, model, url, 16, concurrency, window_s), urls))
    return {"req_s": sum(f["req_s"] for f in each), "fronts": len(urls), "each": each}


def front_replicas(args: argparse.Namespace, cluster_nodes: list[str], results: dict[str, Any]) -> None:
    """Scenario 3: the owner's front alone, with replicas on one and two worker nodes, and three local fronts."""
    config = ModelConfig(max_batch_size=8, instances=2 * len(cluster_nodes), resources=Resources(num_cpus=0.5))
    any_port = {"http": 0, "grpc": 0, "metrics": None}
    setups: dict[str, tuple[RayBackend, int]] = {
        "owner's front": (RayBackend(node_fronts=False, encrypt=False), 1),
        "owner's front + 1 replica": (RayBackend(node_fronts=cluster_nodes[:1], node_ports=any_port, encrypt=False), 1),
        "owner's front + 2 replicas": (
            RayBackend(node_fronts=cluster_nodes[:2], node_ports=any_port, encrypt=False),
            1,
        ),
        "Serve(fronts=3), owner's host": (RayBackend(node_fronts=False, encrypt=False), 3),
    }
    for name, (backend, fronts) in setups.items():
        with served(backend, "identity", identity, config, fronts) as server:
            urls = [server.grpc_url or ""] * fronts
            urls += [f"{LOOPBACK}:{replica['grpc_port']}" for replica in backend.replicas]
            figures = perf_together(args.perf_analyzer, "identity", urls, args.front_concurrency, args.seconds)
        results["fronts"][name] = figures
        print(f"{name}: {figures['req_s']:.0f} req/s over {figures['fronts']} front(s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--perf-analyzer", default=os.environ.get("PERF_ANALYZER", ".venv/pabin/perf_analyzer"))
    parser.add_argument("--seconds", type=float, default=2.0, help="perf_analyzer window, three per figure")
    parser.add_argument("--node-cpus", type=int, default=1, help="CPUs of each of the three worker nodes")
    parser.add_argument("--scenarios", default="throughput,latency", help="any of throughput, latency, fronts")
    parser.add_argument("--front-concurrency", type=int, default=16, help="per front, in the fronts scenario")
    parser.add_argument(
        "--out",
        default=str(ROOT / "benchmarks" / "results" / "local"),
        help="results folder (default benchmarks/results/local, which git ignores)",
    )
    args = parser.parse_args()

    import ray
    from ray.cluster_utils import Cluster

    node = {"node_ip_address": LOOPBACK, "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "num_cpus": 0})
    worker_nodes = [cluster.add_node(**node, num_cpus=args.node_cpus, resources={"worker": 1}) for _ in range(3)]
    ray.init(address=cluster.address, _node_ip_address=LOOPBACK, log_to_driver=False)
    scenarios = set(args.scenarios.split(","))
    results: dict[str, Any] = {"cores": os.cpu_count(), "window_s": args.seconds, "node_cpus": args.node_cpus}
    results.update(throughput={}, latency={}, fronts={})
    one_per_node = Resources(num_cpus=1, custom={"worker": 1})
    try:
        for nodes in (1, 2, 3) if "throughput" in scenarios else ():
            config = ModelConfig(max_batch_size=1, instances=nodes, resources=one_per_node)
            with served(RayBackend(transport="tcp"), "spin", spin, config) as server:
                figures = perf(args.perf_analyzer, "spin", server.grpc_url or "", 1, 8, args.seconds)
            results["throughput"][nodes] = figures
            print(f"spin on {nodes} node(s): {figures['req_s']:.0f} req/s, p50 {figures['p50_ms']:.2f} ms", flush=True)
        paths: dict[str, tuple[RayBackend | None, ModelConfig]] = {
            "single host (forked worker, shm)": (None, ModelConfig(instances=1)),
            "Ray actor, this host (shm)": (RayBackend(transport="auto"), ModelConfig(resources=one_per_node)),
            "Ray actor, network (CurveZMQ)": (RayBackend(transport="tcp"), ModelConfig(resources=one_per_node)),
            "Ray actor, network (plain)": (
                RayBackend(transport="tcp", encrypt=False),
                ModelConfig(resources=one_per_node),
            ),
        }
        for name, (backend, config) in paths.items() if "latency" in scenarios else ():
            with served(backend, "identity", identity, config) as server:
                for size, elements in (("64 B", 16), ("1 MiB", 1 << 18)):
                    figures = perf(args.perf_analyzer, "identity", server.grpc_url or "", elements, 1, args.seconds)
                    results["latency"].setdefault(name, {})[size] = figures
                    print(f"{name}, {size}: p50 {figures['p50_ms']:.3f} ms, {figures['req_s']:.0f} req/s", flush=True)
        if "fronts" in scenarios:
            front_replicas(args, [n.node_id for n in worker_nodes], results)
    finally:
        ray.shutdown()
        cluster.shutdown()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ray_scale.json").write_text(json.dumps(results, indent=2))
    print(f"written to {out / 'ray_scale.json'}")


if __name__ == "__main__":
    main()
