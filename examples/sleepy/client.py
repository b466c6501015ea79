"""Sends 128 requests from 32 threads to sleepy and prints the time taken and the batch sizes the model saw."""

from __future__ import annotations

import argparse
import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import tritonclient.http as httpclient


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="127.0.0.1:8000")
    parser.add_argument("--metrics-url", default="http://127.0.0.1:8002/metrics")
    parser.add_argument("--requests", type=int, default=128)
    args = parser.parse_args()
    x = np.ones((1, 4), dtype=np.float32)

    def call(_: int) -> None:
        with httpclient.InferenceServerClient(args.url) as client:
            tensor = httpclient.InferInput("x", x.shape, "FP32")
            tensor.set_data_from_numpy(x)
            assert client.infer("sleepy", [tensor]).as_numpy("y").tolist() == [[2.0] * 4]

    started = time.monotonic()
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(call, range(args.requests)))
    print(f"{args.requests} requests in {time.monotonic() - started:.2f} s")
    metrics = httpx.get(args.metrics_url).text
    executions = re.search(r'nv_inference_exec_count\{model="sleepy",version="1"\} (\d+)', metrics)
    if executions:
        batches = int(executions.group(1))
        print(f"the model ran {batches} batches: {args.requests / batches:.1f} requests per batch")


if __name__ == "__main__":
    main()
