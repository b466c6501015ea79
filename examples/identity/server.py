"""identity: returns its inputs, in several dtypes (FP32, FP16, INT8, BYTES) and with an optional BOOL input.

Run ``python examples/identity/server.py``, then ``python examples/identity/client.py``.
"""

from __future__ import annotations

import argparse

import numpy as np

from pybind_serve import ModelConfig, Serve, Tensor, batch, fill_optionals

INPUTS = [
    Tensor("fp32", np.float32, (-1,)),
    Tensor("fp16", np.float16, (-1,)),
    Tensor("int8", np.int8, (-1,)),
    Tensor("text", bytes, (1,)),
    Tensor("mask", np.bool_, (1,), optional=True),
]


@fill_optionals(mask=np.array([True]))
@batch
def identity(**inputs: np.ndarray) -> dict[str, np.ndarray]:
    return {f"{name}_out": value for name, value in inputs.items()}


def bind(serve: Serve) -> None:
    outputs = [Tensor(f"{t.name}_out", t.dtype, t.shape) for t in INPUTS]
    serve.bind("identity", identity, inputs=INPUTS, outputs=outputs, config=ModelConfig(max_batch_size=16))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    args = parser.parse_args()
    with Serve(http_port=args.http_port, grpc_port=args.grpc_port, metrics_port=args.metrics_port) as serve:
        bind(serve)
        serve.serve()  # prints where it listens; Ctrl-C or SIGTERM stops it


if __name__ == "__main__":
    main()
