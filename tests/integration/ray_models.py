"""The models of test_ray.py, in a module of their own: a Ray actor imports it by name to unpickle them (the owner's
sys.path reaches the actor), without importing the test module and its fixtures."""

from __future__ import annotations

import asyncio
import os
import socket
import time

import numpy as np

from pybind_serve import batch, sample, worker_context


def _node_id() -> str:
    import ray

    return str(ray.get_runtime_context().get_node_id())


@batch
def echo(x, text):  # type: ignore[no-untyped-def]
    """Numeric and BYTES tensors back unchanged (and doubled), with where it ran."""
    where = f"{_node_id()} {socket.gethostname()} {os.getpid()}".encode()
    return {"y": x * 2, "text_out": text, "where": np.full((len(x), 1), where, dtype=object)}


@batch
def slow_where(x):  # type: ignore[no-untyped-def]
    """Where it ran, after 20 ms: a batch is in flight long enough to be lost with its worker."""
    time.sleep(0.02)
    return {"where": np.full((len(x), 1), _node_id().encode(), dtype=object), "y": x + 1}


@batch
def slower_where(x):  # type: ignore[no-untyped-def]
    """Where it ran, after 200 ms: a few clients keep a short queue that waits long."""
    time.sleep(0.2)
    return {"where": np.full((len(x), 1), _node_id().encode(), dtype=object), "y": x + 1}


@batch
def hangs_on_minus_one(x):  # type: ignore[no-untyped-def]
    """Where it ran; a batch with a -1 in it sleeps 30 s first (past any execution_timeout_s of the tests)."""
    if (x == -1).any():
        time.sleep(30)
    return {"where": np.full((len(x), 1), _node_id().encode(), dtype=object), "y": x + 1}


@batch
def gpu_where(x):  # type: ignore[no-untyped-def]
    """Where it ran: its node, the GPUs Ray gave it (CUDA_VISIBLE_DEVICES), its device as `worker_context` says, and
    its process; after 0.5 s, so that requests sent at once reach every instance. It computes on the CPU."""
    time.sleep(0.5)
    context = worker_context()
    device = context.device if context is not None else "none"
    where = f"{_node_id()} {os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')} {device} {os.getpid()}"
    return {"where": np.full((len(x), 1), where.encode(), dtype=object), "y": x + 1}


@batch
def spin(x):  # type: ignore[no-untyped-def]
    """A CPU-bound model: about 5 ms of Python arithmetic per call."""
    deadline = time.perf_counter() + 0.005
    total = 0
    while time.perf_counter() < deadline:
        total += 1
    return {"y": x + 1}


@sample
def words(text_input):  # type: ignore[no-untyped-def]
    """A streaming model: one response per word."""
    for word in text_input.item().decode().split():
        yield {"text_output": np.array([[word.encode()]], dtype=object)}


@batch
async def overlapped(x):  # type: ignore[no-untyped-def]
    """An async model with concurrency: its batches overlap while they wait."""
    await asyncio.sleep(0.05)
    return {"y": x * 3}
