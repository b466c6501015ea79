"""add_sub: two FP32 vectors in, their sum and difference out, dynamically batched up to 64 rows.

Run ``python examples/add_sub/server.py`` (Triton's ports: HTTP 8000, gRPC 8001, metrics 8002), then
``python examples/add_sub/client.py`` (or ``client.py --protocol grpc``).
"""

from __future__ import annotations

import argparse

import numpy as np

from pybind_serve import ModelConfig, Serve, Tensor, batch


@batch
def add_sub(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    return {"add": a + b, "sub": a - b}


def bind(serve: Serve) -> None:
    serve.bind(
        "add_sub",
        add_sub,
        inputs=[Tensor("a", np.float32, (-1,)), Tensor("b", np.float32, (-1,))],
        outputs=[Tensor("add", np.float32, (-1,)), Tensor("sub", np.float32, (-1,))],
        config=ModelConfig(max_batch_size=64),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    args = parser.parse_args()
    ports = {"http_port": args.http_port, "grpc_port": args.grpc_port, "metrics_port": args.metrics_port}
    with Serve(host=args.host, **ports) as serve:
        bind(serve)
        serve.serve()  # prints where it listens; Ctrl-C or SIGTERM stops it


if __name__ == "__main__":
    main()
