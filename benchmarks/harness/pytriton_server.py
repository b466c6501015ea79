"""PyTriton (the anchor) serving the suite's models (add_sub, sleepy, identity) on the ports given. Run by the
anchors' virtualenv (benchmarks/anchors/setup.sh), so it imports nothing of ours.

    python pytriton_server.py --http-port P --grpc-port P --metrics-port P --handshake-fd FD [--sleepy-ms 20]

Like pybind_server.py: once ``run()`` returned it writes one JSON line to FD (the clock before ``Triton()``
and after ``run()``), then serves until SIGTERM or
SIGINT, and stops PyTriton (which removes what it can of its shared memory; the suite sweeps the rest).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import threading
import time

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig


@batch
def add_sub(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    return {"add": a + b, "sub": a - b}


@batch
def identity(x: np.ndarray) -> dict[str, np.ndarray]:
    return {"y": x}


def bind(triton: Triton, sleepy_ms: float) -> None:
    @batch
    def sleepy(x: np.ndarray) -> dict[str, np.ndarray]:
        time.sleep(sleepy_ms / 1000)
        return {"y": x * 2}

    def fp32(*names: str, shape: tuple[int, ...] = (-1,)) -> list[Tensor]:
        return [Tensor(name=name, dtype=np.float32, shape=shape) for name in names]

    models = [
        (
            "add_sub",
            add_sub,
            fp32("a", "b"),
            fp32("add", "sub"),
            ModelConfig(max_batch_size=64, batcher=DynamicBatcher()),
        ),
        ("sleepy", sleepy, fp32("x", shape=(4,)), fp32("y", shape=(4,)), ModelConfig(max_batch_size=64)),
        ("identity", identity, fp32("x"), fp32("y"), ModelConfig(max_batch_size=8)),
    ]
    for name, fn, inputs, outputs, config in models:
        triton.bind(name, fn, inputs=inputs, outputs=outputs, config=config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("--http-port", "--grpc-port", "--metrics-port", "--handshake-fd"):
        parser.add_argument(name, type=int, required=True)
    parser.add_argument("--sleepy-ms", type=float, default=20.0)
    args = parser.parse_args()
    stopping = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stopping.set())
    loopback = {f"{kind}_address": "127.0.0.1" for kind in ("http", "grpc", "metrics")}
    ports = {"http_port": args.http_port, "grpc_port": args.grpc_port, "metrics_port": args.metrics_port}
    config = TritonConfig(**loopback, **ports)
    t0 = time.monotonic()  # entering Triton() starts its server, and bind() loads a model at once
    with Triton(config=config, security_config=TritonSecurityConfig(restricted_endpoints=[])) as triton:
        bind(triton, args.sleepy_ms)
        triton.run()
        t_run = time.monotonic()
        os.write(args.handshake_fd, (json.dumps({"t0": t0, "t_run": t_run}) + "\n").encode())
        os.close(args.handshake_fd)
        stopping.wait()


if __name__ == "__main__":
    main()
