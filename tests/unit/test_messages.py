"""`ModelSpec` (label, wire round trip through JSON) and `InferRequest.shape_key`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pybind_serve.config import DynamicBatcher, ModelConfig, QueuePolicy, TimeoutAction
from pybind_serve.protocol.messages import InferRequest, RequestedOutput
from pybind_serve.spec import ModelSpec
from pybind_serve.tensor import Tensor

SIMPLE = ModelSpec(
    name="add",
    version=1,
    inputs=(Tensor("x", np.float32, (-1, 3)),),
    outputs=(Tensor("y", np.float32, (-1, 3)),),
    config=ModelConfig(),
)

COMPLEX = ModelSpec(
    name="ranker_v2",
    version=7,
    inputs=(
        Tensor("query", bytes, (1,)),
        Tensor("ids", np.int64, (-1,), optional=True),
        Tensor("mask", np.bool_, (4, -1)),
        Tensor("scalar", np.float16, ()),
        Tensor("big", np.dtype(">u4"), (2, 2)),
    ),
    outputs=(Tensor("scores", np.float64, (-1,)), Tensor("labels", str, (-1, 2))),
    config=ModelConfig(
        batching=True,
        max_batch_size=32,
        decoupled=True,
        instances=3,
        execution_timeout_s=2.5,
        batcher=DynamicBatcher(
            max_queue_delay_us=1500,
            preferred_batch_sizes=(16, 4, 8, 4),
            priority_levels=3,
            default_priority_level=2,
            default_queue_policy=QueuePolicy(TimeoutAction.DELAY, 5_000, False, 10),
            priority_queue_policies={
                1: QueuePolicy(default_timeout_us=100, max_queue_size=2),
                3: QueuePolicy(timeout_action="DELAY", allow_timeout_override=False),
            },
            preserve_ordering=True,
        ),
    ),
    strict=True,
)

NOT_BATCHING = ModelSpec(
    name="once",
    version=2,
    inputs=(Tensor("a", np.uint8, (224, 224, 3)),),
    outputs=(),
    config=ModelConfig(batching=False, max_batch_size=1, batcher=DynamicBatcher(priority_levels=2)),
)


def through_json(spec: ModelSpec) -> ModelSpec:
    return ModelSpec.from_wire(json.loads(json.dumps(spec.to_wire())))


@pytest.mark.parametrize("spec", [SIMPLE, COMPLEX, NOT_BATCHING], ids=["simple", "complex", "not-batching"])
def test_wire_round_trip_through_json(spec: ModelSpec) -> None:
    rebuilt = through_json(spec)
    assert rebuilt == spec
    assert rebuilt.to_wire() == spec.to_wire()


def test_round_trip_keeps_every_detail() -> None:
    rebuilt = through_json(COMPLEX)
    batcher = rebuilt.config.batcher
    assert [t.datatype for t in rebuilt.inputs] == ["BYTES", "INT64", "BOOL", "FP16", "UINT32"]
    assert [t.shape for t in rebuilt.inputs] == [(1,), (-1,), (4, -1), (), (2, 2)]
    assert [t.optional for t in rebuilt.inputs] == [False, True, False, False, False]
    assert rebuilt.inputs[4].dtype == np.dtype("<u4")
    assert [t.datatype for t in rebuilt.outputs] == ["FP64", "BYTES"]
    assert (rebuilt.config.decoupled, rebuilt.config.instances, rebuilt.strict) == (True, 3, True)
    assert batcher.preferred_batch_sizes == (4, 8, 16)
    assert (batcher.priority_levels, batcher.default_priority_level, batcher.preserve_ordering) == (3, 2, True)
    assert batcher.default_queue_policy == QueuePolicy(TimeoutAction.DELAY, 5_000, False, 10)
    assert batcher.default_queue_policy.timeout_action is TimeoutAction.DELAY
    assert dict(batcher.priority_queue_policies) == {
        1: QueuePolicy(default_timeout_us=100, max_queue_size=2),
        3: QueuePolicy(timeout_action=TimeoutAction.DELAY, allow_timeout_override=False),
    }
    assert batcher.queue_policy(2) == batcher.default_queue_policy


def test_the_default_priority_level_survives_the_trip() -> None:
    # 0 became the lowest level when built; the rebuilt batcher must agree.
    rebuilt = through_json(NOT_BATCHING)
    assert rebuilt.config.batcher.default_priority_level == 2
    assert rebuilt.config.effective_max_batch_size == 0


def test_wire_form_is_plain_json() -> None:
    wire = json.loads(json.dumps(SIMPLE.to_wire()))
    assert wire["name"] == "add"
    assert wire["version"] == 1
    assert wire["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 3], "optional": False}]
    assert wire["config"]["batcher"]["default_queue_policy"] == {
        "timeout_action": "REJECT",
        "default_timeout_us": 0,
        "allow_timeout_override": True,
        "max_queue_size": 0,
    }
    assert wire["config"]["instances"] is None


def test_wire_priority_policy_keys_are_strings() -> None:
    policies = json.loads(json.dumps(COMPLEX.to_wire()))["config"]["batcher"]["priority_queue_policies"]
    assert sorted(policies) == ["1", "3"]
    assert policies["3"]["timeout_action"] == "DELAY"


@pytest.mark.parametrize(
    ("name", "version", "label"), [("add_sub", 1, "model 'add_sub' v1"), ("x", 12, "model 'x' v12")]
)
def test_label(name: str, version: int, label: str) -> None:
    spec = ModelSpec(name, version, (), (), ModelConfig())
    assert spec.label == label


def request(**inputs: np.ndarray) -> InferRequest:
    return InferRequest(model="m", version=1, inputs=inputs)


def test_shape_key_ignores_the_batch_dim() -> None:
    a = request(x=np.zeros((1, 3, 2)), y=np.zeros((1,)))
    b = request(x=np.zeros((8, 3, 2)), y=np.zeros((8,)))
    assert a.shape_key() == b.shape_key() == (("x", (3, 2)), ("y", ()))


def test_shape_key_sorts_names() -> None:
    first = request(b=np.zeros((2, 4)), a=np.zeros((2, 1)), c=np.zeros((2,)))
    second = request(c=np.zeros((5,)), a=np.zeros((5, 1)), b=np.zeros((5, 4)))
    assert first.shape_key() == second.shape_key() == (("a", (1,)), ("b", (4,)), ("c", ()))


def test_shape_key_differs_on_other_dims_and_names() -> None:
    base = request(x=np.zeros((2, 3)))
    assert base.shape_key() != request(x=np.zeros((2, 4))).shape_key()
    assert base.shape_key() != request(z=np.zeros((2, 3))).shape_key()
    assert base.shape_key() != request(x=np.zeros((2, 3)), y=np.zeros((2,))).shape_key()
    assert hash(base.shape_key()) == hash(request(x=np.zeros((9, 3))).shape_key())


def test_infer_request_defaults() -> None:
    r = request(x=np.zeros((1,)))
    assert (r.rows, r.id, r.parameters, r.priority, r.timeout_us) == (1, "", {}, 0, 0)
    assert (r.outputs, r.binary_output) == (None, False)
    assert RequestedOutput("y").binary is None
