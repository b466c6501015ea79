"""sleepy: a model that costs a fixed time per batch whatever its size, to watch dynamic batching work.

Run ``python examples/sleepy/server.py --ms 20``, then ``python examples/sleepy/client.py``: 128 requests
from 32 threads finish in a fraction of the 128 x 20 ms one-at-a-time would take.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pybind_serve import ModelConfig, Serve, Tensor, batch


def make_sleepy(ms: float) -> object:
    @batch
    def sleepy(x: np.ndarray) -> dict[str, np.ndarray]:
        time.sleep(ms / 1000)
        return {"y": x * 2}

    return sleepy


def bind(serve: Serve, ms: float = 20.0, max_batch_size: int = 64) -> None:
    serve.bind(
        "sleepy",
        make_sleepy(ms),
        inputs=[Tensor("x", np.float32, (4,))],
        outputs=[Tensor("y", np.float32, (4,))],
        config=ModelConfig(max_batch_size=max_batch_size),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ms", type=float, default=20.0, help="milliseconds per batch")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    args = parser.parse_args()
    with Serve(http_port=args.http_port, grpc_port=args.grpc_port, metrics_port=args.metrics_port) as serve:
        bind(serve, args.ms)
        serve.serve()  # prints where it listens; Ctrl-C or SIGTERM stops it


if __name__ == "__main__":
    main()
