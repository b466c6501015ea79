"""pybind_serve as the suite runs it: add_sub and sleepy from examples/, and a one-input FP32 identity (as
PyTriton's), on free loopback ports through the public API: ``Serve(http_port=0, grpc_port=0,
metrics_port=0, system_shared_memory=True)``, ``bind``, ``run``.

    python -m benchmarks.harness.pybind_server --handshake-fd FD [--sleepy-ms 20]

Once ``run()`` returned it writes one JSON line to FD (the clock before ``Serve()`` and after ``run()``, and
the ports), then serves until SIGTERM or SIGINT, and drains and stops.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from pathlib import Path
from types import ModuleType

import numpy as np

from pybind_serve import ModelConfig, Serve, Tensor, batch

from .scenarios import IDENTITY_MAX_BATCH, SLEEPY_MAX_BATCH

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example(name: str) -> ModuleType:
    """``examples/<name>/server.py``, loaded from its file (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / name / "server.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@batch
def identity(x: np.ndarray) -> dict[str, np.ndarray]:
    return {"y": x}


def bind(serve: Serve, examples: dict[str, ModuleType], sleepy_ms: float) -> None:
    examples["add_sub"].bind(serve)
    examples["sleepy"].bind(serve, sleepy_ms, SLEEPY_MAX_BATCH)
    serve.bind(
        "identity",
        identity,
        inputs=[Tensor("x", np.float32, (-1,))],
        outputs=[Tensor("y", np.float32, (-1,))],
        config=ModelConfig(max_batch_size=IDENTITY_MAX_BATCH),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--handshake-fd", type=int, required=True)
    parser.add_argument("--sleepy-ms", type=float, default=20.0)
    args = parser.parse_args()
    examples = {name: example(name) for name in ("add_sub", "sleepy")}
    t0 = time.monotonic()  # "from Serve().run() to ready": binding is part of it, as it is for PyTriton
    with Serve(http_port=0, grpc_port=0, metrics_port=0, system_shared_memory=True) as serve:
        bind(serve, examples, args.sleepy_ms)
        serve.run()
        t_run = time.monotonic()
        report = {"t0": t0, "t_run": t_run, "http_port": serve.http_port, "grpc_port": serve.grpc_port}
        os.write(args.handshake_fd, (json.dumps(report) + "\n").encode())
        os.close(args.handshake_fd)
        serve.serve()


if __name__ == "__main__":
    main()
