"""The server the fault probes attack, in a process of its own: ``python tests/faults/server.py '<options JSON>'``.

It binds ``fault`` (a function that misbehaves on request: the first input value picks how) and ``identity``
(large tensors), runs, prints one JSON line (its URLs and pid), then serves until SIGTERM. Options the
pybind_serve it imports does not know are left out (so the probes can also attack an older version, for a
before/after comparison); the JSON line lists them.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import sys
import time
from typing import Any

import numpy as np

from pybind_serve import ModelConfig, Serve, Tensor, batch

# What `fault` does, by the first value of its input.
ECHO, EXIT, INTERRUPT, HANG, SLOW, HUGE_ERROR, CRASH = range(7)
HUGE_ERROR_CHARS = 20 << 20
SLOW_S = 3.0


@batch
def fault(x: np.ndarray) -> dict[str, np.ndarray]:
    code = int(x.flat[0])
    if code == EXIT:
        sys.exit(3)
    if code == INTERRUPT:
        raise KeyboardInterrupt
    if code == HANG:
        time.sleep(3600)
    if code == SLOW:
        time.sleep(SLOW_S)
    if code == HUGE_ERROR:
        raise ValueError("x" * HUGE_ERROR_CHARS)
    if code == CRASH:
        os._exit(1)  # a crash no handler sees, like a segfault in an extension
    return {"y": x}


@batch
def identity(x: np.ndarray) -> dict[str, np.ndarray]:
    return {"y": x}


def _known(names: set[str], options: dict[str, Any], skipped: list[str]) -> dict[str, Any]:
    skipped += sorted(set(options) - names)
    return {key: value for key, value in options.items() if key in names}


def main(options: dict[str, Any]) -> None:
    skipped: list[str] = []
    serve_options = {"http_port": 0, "grpc_port": 0, "metrics_port": 0, **options.get("serve", {})}
    serve = Serve(**_known(set(inspect.signature(Serve).parameters), serve_options, skipped))
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    config = ModelConfig(**_known(fields, {"max_batch_size": 1, **options.get("model", {})}, skipped))
    one = [Tensor("x", np.float32, (1,))], [Tensor("y", np.float32, (1,))]
    serve.bind("fault", fault, *one, config=config)
    big = [Tensor("x", np.float32, (-1,))], [Tensor("y", np.float32, (-1,))]
    serve.bind("identity", identity, *big, config=dataclasses.replace(config, max_batch_size=4))
    serve.run()
    started = {"http": serve.http_url, "grpc": serve.grpc_url, "metrics": serve.metrics_url, "pid": os.getpid()}
    print(json.dumps({**started, "skipped": skipped}), flush=True)
    serve.serve()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
