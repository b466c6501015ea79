"""A function may return torch tensors: they reach the client as the declared dtype (cast if need be, refused
with ``strict``), from the binding process and from worker processes. Skipped where torch is not installed
(CI installs the CPU build; tests/gpu covers CUDA tensors)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import numpy as np
import pytest

from pybind_serve import ModelConfig, Serve, Tensor, batch, sample

from .conftest import WAIT_S

torch = pytest.importorskip("torch")

X = [Tensor("x", np.float32, (-1,))]


@batch
def doubled(x: np.ndarray) -> dict[str, object]:
    return {"y": torch.from_numpy(x) * 2}  # float32: as declared


@batch
def as_float64(x: np.ndarray) -> dict[str, object]:
    return {"y": torch.from_numpy(x).double()}  # castable to the declared float32


@sample
def counted(x: np.ndarray) -> dict[str, object]:
    return {"n": torch.tensor([x.size], dtype=torch.int64), "y": torch.ones(2, dtype=torch.float32).neg()}


def infer(client: httpx.Client, model: str, rows: list[list[float]]) -> httpx.Response:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [len(rows), len(rows[0])], "data": rows}]}
    return client.post(f"/v2/models/{model}/infer", json=body)


@pytest.mark.parametrize("instances", [None, 1], ids=["thread", "process"])
def test_torch_tensors_are_answered_as_the_declared_outputs(
    make_serve: Callable[..., Serve], instances: int | None
) -> None:
    serve = make_serve()
    config = ModelConfig(max_batch_size=4, instances=instances)
    serve.bind("doubled", doubled, X, [Tensor("y", np.float32, (-1,))], config=config)
    serve.bind("cast", as_float64, X, [Tensor("y", np.float32, (-1,))], config=config)
    serve.bind("strict", as_float64, X, [Tensor("y", np.float32, (-1,))], config=config, strict=True)
    outputs = [Tensor("n", np.int64, (1,)), Tensor("y", np.float32, (2,))]
    serve.bind("counted", counted, X, outputs, config=config)
    serve.run()
    with httpx.Client(base_url=serve.http_url, timeout=WAIT_S) as client:
        answer = infer(client, "doubled", [[1, 2], [3, 4]]).json()["outputs"][0]
        assert (answer["datatype"], answer["data"]) == ("FP32", [2.0, 4.0, 6.0, 8.0])
        answer = infer(client, "cast", [[1.5]]).json()["outputs"][0]
        assert (answer["datatype"], answer["data"]) == ("FP32", [1.5])
        refused = infer(client, "strict", [[1.5]])
        assert refused.status_code == 500
        assert "expected FP32, got a torch tensor of torch.float64" in refused.json()["error"]
        answers = {o["name"]: o["data"] for o in infer(client, "counted", [[1, 2, 3]]).json()["outputs"]}
        assert answers == {"n": [3], "y": [-1.0, -1.0]}  # a negated view is resolved before it is read
