"""A 16 MiB FP32 request's round trip with and without system shared memory, through `ModelClient` over HTTP and
gRPC, and through tritonclient's own shared-memory utilities as a client other than ours would do it.

    python benchmarks/shm_roundtrip.py [--mib 16] [--calls 40] [--repeat 3] [--smoke]

One server (``Serve(system_shared_memory=True)``) serves an identity model on a fixed-size FP32 vector; one
client sends one request at a time (concurrency 1), so each figure is the latency of moving 16 MiB in and
16 MiB back, and the throughput it implies. Each figure is the median of ``--repeat`` runs of ``--calls``
calls; results go to ``<--out>/shm_roundtrip.json`` (``benchmarks/results/local``, which git ignores;
``--out benchmarks/results`` updates the figures kept) and a Markdown table on stdout. The answers are checked
on every call: a fast wrong answer is no figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pybind_serve import ModelConfig, Serve, Tensor, batch
from pybind_serve.client import ModelClient

RESULTS = Path(__file__).resolve().parent / "results" / "local"


@batch
def identity(x: np.ndarray) -> dict[str, np.ndarray]:
    return {"y": x}


def timed(call: Callable[[], None], calls: int) -> list[float]:
    call()  # warm up: connections, regions, the worker's arena
    seconds = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return seconds


def ours(url: str, shared_memory: bool, x: np.ndarray) -> tuple[Callable[[], None], Callable[[], None]]:
    client = ModelClient(url, "identity", shared_memory=shared_memory, timeout_s=120)

    def call() -> None:
        y = client.infer_sample(x=x)["y"]
        assert y.shape == x.shape and y[-1] == x[-1] and y[0] == x[0]

    return call, client.close


def tritonclient_shm(serve: Serve, protocol: str, x: np.ndarray) -> tuple[Callable[[], None], Callable[[], None]]:
    """The way a tritonclient user does it: two regions registered once, inputs set and outputs read each call."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    import tritonclient.utils.shared_memory as shm

    module: Any = httpclient if protocol == "http" else grpcclient
    url = f"127.0.0.1:{serve.http_port}" if protocol == "http" else serve.grpc_url
    client = (
        module.InferenceServerClient(url, network_timeout=120)
        if protocol == "http"
        else module.InferenceServerClient(url)
    )
    batch_x = x[None, :]
    tag = f"bench_{os.getpid()}_{protocol}"
    regions = [shm.create_shared_memory_region(f"{tag}_{n}", f"/{tag}_{n}", batch_x.nbytes) for n in ("in", "out")]
    for n in ("in", "out"):
        client.register_system_shared_memory(f"{tag}_{n}", f"/{tag}_{n}", batch_x.nbytes)
    tensor = module.InferInput("x", list(batch_x.shape), "FP32")
    tensor.set_shared_memory(f"{tag}_in", batch_x.nbytes)
    output = module.InferRequestedOutput("y")
    output.set_shared_memory(f"{tag}_out", batch_x.nbytes)

    def call() -> None:
        shm.set_shared_memory_region(regions[0], [batch_x])
        client.infer("identity", [tensor], outputs=[output])
        y = shm.get_contents_as_numpy(regions[1], np.float32, list(batch_x.shape)).copy()
        assert y.shape == batch_x.shape and y[0, -1] == x[-1]

    def close() -> None:
        client.unregister_system_shared_memory()
        client.close()
        for region in regions:
            shm.destroy_shared_memory_region(region)

    return call, close


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=float, default=16)
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="1 MiB, a few calls, no result file")
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results/local, which git ignores)"
    )
    args = parser.parse_args()
    if args.smoke:
        args.mib, args.calls, args.repeat = 1, 3, 1
    elements = int(args.mib * (1 << 20)) // 4
    x = np.random.default_rng(0).random(elements, dtype=np.float32)
    rows: list[dict[str, Any]] = []
    with Serve(http_port=0, grpc_port=0, metrics_port=None, system_shared_memory=True) as serve:
        serve.bind(
            "identity",
            identity,
            [Tensor("x", np.float32, (elements,))],
            [Tensor("y", np.float32, (elements,))],
            config=ModelConfig(max_batch_size=4),
        )
        serve.run()
        urls = {"http": serve.http_url, "grpc": f"grpc://{serve.grpc_url}"}
        cases: list[tuple[str, str, Callable[[], tuple[Callable[[], None], Callable[[], None]]]]] = []
        for protocol, url in urls.items():
            cases.append(("ModelClient", protocol, lambda url=url: ours(url, False, x)))
            cases.append(("ModelClient shared_memory=True", protocol, lambda url=url: ours(url, True, x)))
            cases.append(("tritonclient + system shm", protocol, lambda p=protocol: tritonclient_shm(serve, p, x)))
        for client, protocol, make in cases:
            medians = []
            for _ in range(args.repeat):
                call, close = make()
                try:
                    medians.append(statistics.median(timed(call, args.calls)))
                finally:
                    close()
            latency_s = statistics.median(medians)
            rows.append(
                {
                    "client": client,
                    "protocol": protocol,
                    "mib": args.mib,
                    "p50_ms": round(latency_s * 1e3, 2),
                    "requests_per_s": round(1 / latency_s, 1),
                    "mb_per_s_each_way": round(4 * elements / latency_s / 1e6),
                }
            )
    print(f"| client | protocol | p50 ms | req/s | MB/s each way |  ({args.mib:g} MiB FP32 in and out, c=1)")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['client']} | {row['protocol']} | {row['p50_ms']} | {row['requests_per_s']} | "
            f"{row['mb_per_s_each_way']} |"
        )
    if not args.smoke:
        args.out.mkdir(parents=True, exist_ok=True)
        document = {"cpus": os.cpu_count(), "calls": args.calls, "repeat": args.repeat, "rows": rows}
        (args.out / "shm_roundtrip.json").write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
