"""On a real GPU (skipped elsewhere; CI has none): CUDA tensors as outputs, each worker holding its GPU, a binding
process that initialised CUDA before bind, and the GPU gauges of /metrics under load.

    python -m pytest tests/gpu -m gpu     # on a GPU host, with torch (and nvidia-ml-py for the metrics test)
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest

from pybind_serve import ModelConfig, Serve, Tensor, batch

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here"),
]
WAIT_S = 60.0
X = [Tensor("x", np.float32, (-1,))]
INFO = [Tensor("info", bytes, (1,))]


class OnGpu:
    """Built in its worker: a tensor on the worker's GPU; answers x + 1 computed there, returned as a CUDA tensor."""

    def __init__(self, context: Any) -> None:
        self.device = torch.device("cuda" if context.device == "cpu" else context.device)  # the binding process: cuda
        self.one = torch.ones(1, device=self.device)

    @batch
    def __call__(self, x: np.ndarray) -> dict[str, Any]:
        y = torch.from_numpy(x).to(self.device) + self.one
        assert y.is_cuda
        return {"y": y}


class Where:
    def __init__(self, context: Any) -> None:
        self.report = {
            "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "count": torch.cuda.device_count(),
            "name": torch.cuda.get_device_name(0),
            "device": context.device,
            "instance": context.instance,
            "pid": os.getpid(),
        }
        torch.zeros(1, device=context.device)  # take the GPU

    @batch
    def __call__(self, x: np.ndarray) -> dict[str, Any]:
        return {"info": np.array([[json.dumps(self.report).encode()]] * len(x), dtype=object)}


@pytest.fixture
def serve() -> Iterator[Serve]:
    server = Serve(http_port=0, grpc_port=0, metrics_port=0, startup_timeout_s=120)
    yield server
    server.stop()


def infer(url: str, model: str, rows: int = 1) -> httpx.Response:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [rows, 2], "data": [1.0] * (2 * rows)}]}
    return httpx.post(f"{url}/v2/models/{model}/infer", json=body, timeout=WAIT_S)


@pytest.mark.parametrize("config", [{}, {"devices": "all"}], ids=["binding-process", "gpu-worker"])
def test_cuda_tensors_reach_the_client(serve: Serve, config: dict[str, Any]) -> None:
    serve.bind("plus_one", OnGpu, X, [Tensor("y", np.float32, (-1,))], config=ModelConfig(max_batch_size=8, **config))
    serve.run()
    answer = infer(serve.http_url, "plus_one", rows=3)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == [2.0] * 6


def test_each_worker_holds_its_gpu_as_cuda_0(serve: Serve) -> None:
    config = ModelConfig(devices="all", instances=2, max_batch_size=1)
    serve.bind("where", Where, X, INFO, config=config)
    serve.run()
    groups = httpx.get(f"{serve.http_url}/v2/models/where/config", timeout=WAIT_S).json()["instance_group"]
    gpus = torch.cuda.device_count()
    assert groups == [{"name": "where_0", "kind": "KIND_GPU", "count": 2, "gpus": list(range(gpus))}]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: infer(serve.http_url, "where"), range(64)))
    reports = {a.json()["outputs"][0]["data"][0] for a in answers}
    found = sorted((json.loads(r) for r in reports), key=lambda r: r["instance"])
    assert all(r["count"] == 1 and r["device"] == "cuda:0" for r in found), found
    assert len({r["pid"] for r in found}) == len(found) and os.getpid() not in {r["pid"] for r in found}
    print("workers:", found)


def test_a_binding_process_that_initialised_cuda_can_start_cpu_and_gpu_instances(serve: Serve) -> None:
    torch.ones(1, device="cuda")  # CUDA is initialised here: forking a worker from this process would break it
    assert torch.cuda.is_initialized()
    serve.bind("cpu", Where, X, INFO, config=ModelConfig(instances=2, max_batch_size=1))
    serve.bind("gpu", OnGpu, X, [Tensor("y", np.float32, (-1,))], config=ModelConfig(devices=["cuda:0"]))
    serve.run()
    assert infer(serve.http_url, "cpu").status_code == 200
    assert infer(serve.http_url, "gpu").json()["outputs"][0]["data"] == [2.0, 2.0]


def test_gpu_metrics_are_there_and_move_under_load(serve: Serve) -> None:
    pytest.importorskip("pynvml")
    serve.bind("plus_one", OnGpu, X, [Tensor("y", np.float32, (-1,))], config=ModelConfig(devices="all"))
    serve.run()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: infer(serve.http_url, "plus_one", rows=16), range(200)))
    assert serve.metrics_url is not None
    text = httpx.get(serve.metrics_url, timeout=WAIT_S).text
    lines = [line for line in text.splitlines() if line.startswith(("nv_gpu_", "nv_energy"))]
    print("\n".join(lines))
    used = [float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("nv_gpu_memory_used_bytes")]
    total = [float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("nv_gpu_memory_total_bytes")]
    assert used and all(u > 0 for u in used) and all(t > 0 for t in total)
    assert any(line.startswith("nv_gpu_utilization{") for line in lines)
    assert any(line.startswith("nv_gpu_power_usage{") and float(line.rsplit(" ", 1)[1]) > 0 for line in lines)
