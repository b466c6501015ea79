"""Sends 128 requests from 32 threads to sleepy and prints the time taken and the batch sizes the model saw,
with pybind_serve's own client (one `ModelClient`, shared by the threads) and the server's /metrics."""

from __future__ import annotations

import argparse
import re
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from pybind_serve.client import ModelClient


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="127.0.0.1:8000", help="host:port of the HTTP endpoint")
    parser.add_argument("--metrics-url", default="http://127.0.0.1:8002/metrics")
    parser.add_argument("--requests", type=int, default=128)
    args = parser.parse_args()
    x = np.ones(4, dtype=np.float32)  # one sample: infer_sample adds the batch axis and takes it off the outputs

    with ModelClient(f"http://{args.url}", "sleepy") as client:
        client.wait_for_model(timeout_s=30)

        def call(_: int) -> None:
            assert client.infer_sample(x=x)["y"].tolist() == [2.0] * 4

        started = time.monotonic()
        with ThreadPoolExecutor(32) as pool:
            list(pool.map(call, range(args.requests)))
    print(f"{args.requests} requests in {time.monotonic() - started:.2f} s")
    with urllib.request.urlopen(args.metrics_url, timeout=10) as response:
        metrics = response.read().decode()
    executions = re.search(r'nv_inference_exec_count\{model="sleepy",version="1"\} (\d+)', metrics)
    if executions:
        batches = int(executions.group(1))
        print(f"the model ran {batches} batches: {args.requests / batches:.1f} requests per batch")


if __name__ == "__main__":
    main()
