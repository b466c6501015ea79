"""How workers start: which instances are threads, forked or spawned processes (`supervisor._plans`), and what a
spawned worker receives (`worker_process.dumps`: functions and classes by value, our decorators kept)."""

from __future__ import annotations

import asyncio
import inspect
import pickle
import sys
import types
from typing import Any

import numpy as np
import pytest

from pybind_serve import ModelConfig, Request, Tensor, batch
from pybind_serve.spec import ModelSpec
from pybind_serve.supervisor import _plans
from pybind_serve.worker_process import dumps

X, Y = (Tensor("x", np.float32, (1,)),), (Tensor("y", np.float32, (1,)),)


def spec(**config: Any) -> ModelSpec:
    return ModelSpec("m", 1, X, Y, ModelConfig(**config))


def identity(requests: list[Request]) -> list[Any]:
    return [{"y": r["x"]} for r in requests]


def starts(plans: list[Any]) -> list[tuple[str, str | None]]:
    how = [("thread" if p.placement is None else "spawn" if p.spawn else "fork") for p in plans]
    return [(h, p.placement.visible_devices if p.placement else None) for h, p in zip(how, plans, strict=True)]


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "6,7")


def test_the_default_is_one_thread_and_a_list_is_one_thread_each() -> None:
    assert starts(_plans(spec(), identity)) == [("thread", None)]
    assert starts(_plans(spec(), [identity, identity, identity])) == [("thread", None)] * 3


def test_cpu_instances_are_forked(two_gpus: None) -> None:
    assert starts(_plans(spec(instances=2), identity)) == [("fork", ""), ("fork", "")]


def test_gpu_instances_are_spawned_each_with_its_gpu(two_gpus: None) -> None:
    plans = _plans(spec(devices=("cuda:0", "cuda:1", "cpu"), instances=1), identity)
    assert starts(plans) == [("spawn", "6"), ("spawn", "7"), ("fork", "")]


def test_once_cuda_is_initialised_here_cpu_instances_are_spawned_too(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = types.SimpleNamespace(cuda=types.SimpleNamespace(is_initialized=lambda: True))
    monkeypatch.setitem(sys.modules, "torch", torch)
    assert starts(_plans(spec(instances=2), identity)) == [("spawn", ""), ("spawn", "")]  # GPUs left visible


def test_a_list_gives_each_instance_its_own_function(two_gpus: None) -> None:
    def a(requests: list[Request]) -> list[Any]:
        return requests

    def b(requests: list[Request]) -> list[Any]:
        return requests

    assert [p.fn for p in _plans(spec(instances=2), [a, b])] == [a, b]
    assert [p.fn for p in _plans(spec(devices=("cuda:1", "cuda:0")), [b, a])] == [b, a]


def test_functions_and_classes_defined_anywhere_travel_by_value() -> None:
    offset = 5.0  # a closure's variable travels with it

    class Local:  # not importable from a module: pickled by value
        def __init__(self) -> None:
            self.offset = offset

        @batch
        def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
            return {"y": x + self.offset}

    rebuilt = pickle.loads(dumps(Local))
    (answer,) = rebuilt()([Request({"x": np.zeros(1)})])
    assert answer["y"].tolist() == [5.0]


def test_decorated_functions_stay_decorated_and_async_stays_async() -> None:
    @batch
    async def doubled(x: np.ndarray) -> dict[str, np.ndarray]:
        return {"y": x * 2}

    rebuilt = pickle.loads(dumps(doubled))
    assert inspect.iscoroutinefunction(rebuilt)
    (answer,) = asyncio.run(rebuilt([Request({"x": np.ones(1)})]))
    assert answer["y"].tolist() == [2.0]
