"""Models placed on devices, built where they run: real servers whose workers report where they are.

No GPU is needed: the test process pretends to see two (``CUDA_VISIBLE_DEVICES=6,7``), and each worker answers
with the ``CUDA_VISIBLE_DEVICES`` it was started with and its `worker_context()`; nothing here touches CUDA.
(tests/gpu checks the same on a real GPU.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from pybind_serve import ConfigurationError, ModelConfig, Serve, StartupError, Tensor, batch, worker_context
from tests.conftest import children_of

from .conftest import WAIT_S

X = [Tensor("x", np.float32, (1,))]
WHERE = [Tensor("where", bytes, (1,))]
REPO = Path(__file__).resolve().parents[2]
MakeServe = Callable[..., Serve]


class Where:
    """Built once in each worker: answers where that worker is and how often it was built there."""

    built = 0

    def __init__(self, context: Any) -> None:
        Where.built += 1
        self.report = {
            "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "pid": os.getpid(),
            "instance": context.instance,
            "device": context.device,
            "host_device": context.host_device,
            "built_here": Where.built,
        }

    @batch
    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        assert worker_context() is not None and worker_context().instance == self.report["instance"]
        return {"where": np.array([[json.dumps(self.report).encode()]] * len(x), dtype=object)}


class Broken:
    def __init__(self) -> None:
        raise RuntimeError("the weights are missing")

    def __call__(self, requests: list[Any]) -> list[Any]:
        return []


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "6,7")


def reports(serve: Serve, model: str, calls: int = 24) -> list[dict[str, Any]]:
    """What the workers of ``model`` say, from ``calls`` concurrent requests (enough to reach each of them)."""
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [0]}]}
    with httpx.Client(base_url=serve.http_url, timeout=WAIT_S) as client:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: client.post(f"/v2/models/{model}/infer", json=body), range(calls)))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers if a.status_code != 200]
    seen = {a.json()["outputs"][0]["data"][0] for a in answers}
    return sorted((json.loads(s) for s in seen), key=lambda r: r["instance"])


def config_of(serve: Serve, model: str) -> dict[str, Any]:
    return dict(httpx.get(f"{serve.http_url}/v2/models/{model}/config", timeout=WAIT_S).json())


def test_each_gpu_instance_runs_in_its_own_process_seeing_only_its_gpu(two_gpus: None, make_serve: MakeServe) -> None:
    serve = make_serve()
    config = ModelConfig(devices="all", instances=2, max_batch_size=1, batcher=slow_batches())
    serve.bind("where", Where, X, WHERE, config=config)
    serve.run()
    assert config_of(serve, "where")["instance_group"] == [
        {"name": "where_0", "kind": "KIND_GPU", "count": 2, "gpus": [0, 1]}
    ]
    with grpcclient.InferenceServerClient(serve.grpc_url) as client:  # the same over gRPC's ModelConfig
        (group,) = client.get_model_config("where", as_json=True)["config"]["instance_group"]
    assert (group["kind"], group["count"], group["gpus"]) == ("KIND_GPU", 2, [0, 1])
    found = reports(serve, "where", calls=48)
    assert [(r["instance"], r["visible"], r["device"], r["host_device"]) for r in found] == [
        (0, "6", "cuda:0", "cuda:0"),
        (1, "6", "cuda:0", "cuda:0"),
        (2, "7", "cuda:0", "cuda:1"),
        (3, "7", "cuda:0", "cuda:1"),
    ]
    assert len({r["pid"] for r in found}) == 4 and os.getpid() not in {r["pid"] for r in found}
    assert {r["built_here"] for r in found} == {1}  # once per worker: spawned, so nothing built in the parent
    assert Where.built == 0


def test_cpu_instances_beside_gpu_ones(two_gpus: None, make_serve: MakeServe) -> None:
    serve = make_serve()
    config = ModelConfig(devices=["cuda:1", "cpu"], max_batch_size=1, batcher=slow_batches())
    serve.bind("where", Where, X, WHERE, config=config)
    serve.run()
    assert config_of(serve, "where")["instance_group"] == [
        {"name": "where_0", "kind": "KIND_GPU", "count": 1, "gpus": [1]},
        {"name": "where_1", "kind": "KIND_CPU", "count": 1},
    ]
    found = reports(serve, "where", calls=32)
    assert [(r["visible"], r["device"], r["host_device"]) for r in found] == [
        ("7", "cuda:0", "cuda:1"),
        ("6,7", "cpu", "cpu"),  # forked: the binding process's environment
    ]


def test_a_class_bound_without_devices_is_built_in_each_worker(make_serve: MakeServe) -> None:
    serve = make_serve()
    serve.bind("threaded", Where, X, WHERE, config=ModelConfig(max_batch_size=1))
    serve.bind("forked", Where, X, WHERE, config=ModelConfig(instances=2, max_batch_size=1, batcher=slow_batches()))
    serve.run()
    (threaded,) = reports(serve, "threaded")
    assert threaded["pid"] == os.getpid() and threaded["device"] == "cpu"
    forked = reports(serve, "forked", calls=32)
    assert [r["instance"] for r in forked] == [0, 1] and {r["built_here"] for r in forked} == {Where.built + 1}


def test_a_list_of_functions_gives_one_instance_each(make_serve: MakeServe) -> None:
    serve = make_serve()
    serve.bind("threads", [Where, Where], X, WHERE, config=ModelConfig(max_batch_size=1, batcher=slow_batches()))
    serve.run()
    assert config_of(serve, "threads")["instance_group"] == [{"name": "threads_0", "kind": "KIND_CPU", "count": 2}]
    assert [r["instance"] for r in reports(serve, "threads", calls=32)] == [0, 1]
    with pytest.raises(ConfigurationError, match="3 functions for 2 instances"):
        serve.bind("mismatch", [Where] * 3, X, WHERE, config=ModelConfig(instances=2))


@pytest.mark.parametrize("visible", ["", "0"])
def test_asking_for_gpus_that_are_not_there_fails_at_bind(
    monkeypatch: pytest.MonkeyPatch, make_serve: MakeServe, visible: str
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    serve = make_serve()
    devices = "all" if not visible else ["cuda:1"]
    with pytest.raises(ConfigurationError, match="sees 0 GPUs" if not visible else "cuda:1 is not there"):
        serve.bind("where", Where, X, WHERE, config=ModelConfig(devices=devices))


@pytest.mark.parametrize("config", [{}, {"instances": 1}, {"devices": ["cuda:0"]}], ids=["thread", "fork", "spawn"])
def test_a_model_that_cannot_be_built_fails_bind_at_once_saying_why(
    two_gpus: None, make_serve: MakeServe, config: dict[str, Any]
) -> None:
    serve = make_serve()
    serve.bind("fine", Where, X, WHERE)
    serve.run()
    started = time.monotonic()
    with pytest.raises(StartupError, match="its worker could not start: RuntimeError: the weights are missing"):
        serve.bind("broken", Broken, X, WHERE, config=ModelConfig(**config))
    assert time.monotonic() - started < serve.startup_timeout_s / 2
    with httpx.Client(base_url=serve.http_url, timeout=WAIT_S) as client:
        assert client.get("/v2/models/broken/ready").status_code == 404  # not bound
        assert client.get("/v2/health/ready").status_code == 200
    assert reports(serve, "fine", calls=1)


def test_a_spawned_worker_that_dies_is_started_again_on_its_gpu(two_gpus: None, make_serve: MakeServe) -> None:
    serve = make_serve()
    serve.bind("where", Where, X, WHERE, config=ModelConfig(devices=["cuda:1"], max_batch_size=1))
    serve.run()
    (before,) = reports(serve, "where", calls=1)
    os.kill(before["pid"], 9)
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            (after,) = reports(serve, "where", calls=1)
            break
        except AssertionError:
            assert time.monotonic() < deadline, "the worker was not started again"
            time.sleep(0.1)
    assert after["pid"] != before["pid"] and (after["visible"], after["host_device"]) == ("7", "cuda:1")


SCRIPT = """
import os, sys
import numpy as np
from pybind_serve import ModelConfig, Serve, Tensor, batch

# No `if __name__ == "__main__"`: a spawned worker must never run this script again.
print("script ran in", os.getpid(), file=sys.stderr, flush=True)

class Offset:
    def __init__(self):
        self.offset = float(os.environ["CUDA_VISIBLE_DEVICES"])

    @batch
    def __call__(self, x):
        return {"y": x + self.offset}

serve = Serve(http_port=0, grpc_port=None, metrics_port=None)
serve.bind("offset", Offset, [Tensor("x", np.float32, (1,))], [Tensor("y", np.float32, (1,))],
           config=ModelConfig(devices=["cuda:1"]))
serve.run()
print(serve.http_url, flush=True)
sys.stdin.read()  # until the test closes it
serve.stop()
"""


def test_a_class_defined_in_a_script_is_sent_to_its_spawned_worker(tmp_path: Path) -> None:
    script = tmp_path / "serve_offset.py"
    script.write_text(textwrap.dedent(SCRIPT))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "3,9", "PYTHONPATH": str(REPO)}
    command = [sys.executable, str(script)]
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    with subprocess.Popen(command, env=env, **pipes) as process:  # type: ignore[call-overload]
        try:
            url = process.stdout.readline().decode().strip()
            assert url.startswith("http://"), process.stderr.read().decode()
            body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1]}]}
            answer = httpx.post(f"{url}/v2/models/offset/infer", json=body, timeout=WAIT_S)
            assert answer.json()["outputs"][0]["data"] == [10.0]  # 1 + the worker's CUDA_VISIBLE_DEVICES, 9
            assert len(children_of(process.pid)) == 2  # the front, and the spawned worker
        finally:
            process.stdin.close()
        assert process.wait(WAIT_S) == 0
        assert process.stderr.read().decode().count("script ran in") == 1


def slow_batches() -> Any:
    """A queue delay, so that concurrent requests spread over every instance."""
    from pybind_serve import DynamicBatcher

    return DynamicBatcher(max_queue_delay_us=2000)
