"""Metadata, config and repository documents: Triton's shapes and field names, checked against the protobuf
schema tritonclient ships (``model_config.proto``) and the fields perf_analyzer reads."""

from __future__ import annotations

import json

import numpy as np
import pytest
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2

from pybind_serve.config import DynamicBatcher, ModelConfig, QueuePolicy, TimeoutAction
from pybind_serve.protocol.documents import (
    model_config,
    model_metadata,
    model_statistics,
    repository_index,
    server_metadata,
)
from pybind_serve.spec import ModelSpec
from pybind_serve.tensor import Tensor

INPUTS = (Tensor("image", np.uint8, (-1, 3)), Tensor("prompt", bytes, (1,), optional=True))
OUTPUTS = (Tensor("scores", np.float16, (10,)),)


def make_spec(config: ModelConfig) -> ModelSpec:
    return ModelSpec("classify", 3, INPUTS, OUTPUTS, config)


BATCHER = DynamicBatcher(
    max_queue_delay_us=500,
    preferred_batch_sizes=(8, 4),
    priority_levels=3,
    default_priority_level=2,
    default_queue_policy=QueuePolicy(max_queue_size=100),
    priority_queue_policies={
        1: QueuePolicy(timeout_action=TimeoutAction.DELAY, default_timeout_us=2000, allow_timeout_override=False)
    },
    preserve_ordering=True,
)
BATCHING = make_spec(ModelConfig(max_batch_size=32, batcher=BATCHER, instances=4))
UNBATCHED = make_spec(ModelConfig(batching=False, decoupled=True))


def parse_as_proto(document: dict[str, object]) -> model_config_pb2.ModelConfig:
    # Every key must be a field of Triton's ModelConfig, with a value of the field's type.
    return json_format.ParseDict(json.loads(json.dumps(document)), model_config_pb2.ModelConfig())


def test_server_metadata() -> None:
    assert server_metadata("0.1.0", ["binary_tensor_data", "statistics"]) == {
        "name": "pybind_serve",
        "version": "0.1.0",
        "extensions": ["binary_tensor_data", "statistics"],
    }


def test_model_metadata_shows_the_batch_dim_as_minus_one() -> None:
    assert model_metadata(BATCHING) == {
        "name": "classify",
        "versions": ["3"],
        "platform": "python",
        "inputs": [
            {"name": "image", "datatype": "UINT8", "shape": [-1, -1, 3]},
            {"name": "prompt", "datatype": "BYTES", "shape": [-1, 1]},
        ],
        "outputs": [{"name": "scores", "datatype": "FP16", "shape": [-1, 10]}],
    }


def test_model_metadata_without_batching_keeps_the_shapes() -> None:
    metadata = model_metadata(UNBATCHED)
    assert [t["shape"] for t in metadata["inputs"] + metadata["outputs"]] == [[-1, 3], [1], [10]]


def test_model_config_of_a_batching_model() -> None:
    config = model_config(BATCHING)
    assert config["name"] == "classify"
    assert (config["platform"], config["backend"]) == ("", "python")
    assert config["max_batch_size"] == 32
    assert config["version_policy"] == {"latest": {"num_versions": 1}}
    assert [(i["name"], i["data_type"], i["dims"], i["optional"]) for i in config["input"]] == [
        ("image", "TYPE_UINT8", [-1, 3], False),
        ("prompt", "TYPE_STRING", [1], True),
    ]
    assert [(o["name"], o["data_type"], o["dims"]) for o in config["output"]] == [("scores", "TYPE_FP16", [10])]
    assert config["instance_group"] == [{"name": "classify_0", "kind": "KIND_CPU", "count": 4}]
    assert config["model_transaction_policy"] == {"decoupled": False}
    assert config["dynamic_batching"] == {
        "preferred_batch_size": [4, 8],
        "max_queue_delay_microseconds": 500,
        "preserve_ordering": True,
        "priority_levels": 3,
        "default_priority_level": 2,
        "default_queue_policy": {
            "timeout_action": "REJECT",
            "default_timeout_microseconds": 0,
            "allow_timeout_override": True,
            "max_queue_size": 100,
        },
        "priority_queue_policy": {
            "1": {
                "timeout_action": "DELAY",
                "default_timeout_microseconds": 2000,
                "allow_timeout_override": False,
                "max_queue_size": 0,
            }
        },
    }


def test_model_config_without_batching_has_no_dynamic_batcher() -> None:
    config = model_config(UNBATCHED)
    assert config["max_batch_size"] == 0
    assert "dynamic_batching" not in config
    assert config["model_transaction_policy"] == {"decoupled": True}
    assert config["instance_group"][0]["count"] == 1
    assert config["input"][0]["dims"] == [-1, 3]


@pytest.mark.parametrize("spec", [BATCHING, UNBATCHED], ids=["batching", "unbatched"])
def test_model_config_is_a_valid_triton_model_config(spec: ModelSpec) -> None:
    proto = parse_as_proto(model_config(spec))
    assert proto.max_batch_size == spec.config.effective_max_batch_size
    assert proto.HasField("dynamic_batching") == spec.config.batching
    assert proto.input[1].data_type == model_config_pb2.TYPE_STRING
    assert list(proto.output[0].dims) == [10]


def test_model_config_priority_policies_parse_as_proto_levels() -> None:
    proto = parse_as_proto(model_config(BATCHING))
    policy = proto.dynamic_batching.priority_queue_policy[1]
    assert policy.timeout_action == model_config_pb2.ModelQueuePolicy.DELAY
    assert policy.default_timeout_microseconds == 2000


@pytest.mark.parametrize("spec", [BATCHING, UNBATCHED], ids=["batching", "unbatched"])
def test_model_config_has_what_perf_analyzer_reads(spec: ModelSpec) -> None:
    # perf_analyzer's ModelParser: name (string), max_batch_size (int), model_transaction_policy.decoupled
    # (bool), per input is_shape_tensor and optional (bools), per output is_shape_tensor, platform (string).
    config = model_config(spec)
    assert isinstance(config["name"], str) and isinstance(config["platform"], str)
    assert isinstance(config["max_batch_size"], int)
    assert isinstance(config["model_transaction_policy"]["decoupled"], bool)
    assert all(isinstance(i["is_shape_tensor"], bool) and isinstance(i["optional"], bool) for i in config["input"])
    assert all(isinstance(o["is_shape_tensor"], bool) for o in config["output"])
    metadata_names = {t["name"] for t in model_metadata(spec)["inputs"]}
    assert {i["name"] for i in config["input"]} == metadata_names


def test_repository_index() -> None:
    entries = [("add", 1, "READY", ""), ("broken", 2, "UNAVAILABLE", "worker died")]
    assert repository_index(entries) == [
        {"name": "add", "version": "1", "state": "READY", "reason": ""},
        {"name": "broken", "version": "2", "state": "UNAVAILABLE", "reason": "worker died"},
    ]
    assert repository_index([]) == []


def test_model_statistics_as_triton_fills_them() -> None:
    """``last_inference`` (ms since the epoch) and ``batch_stats`` by batch size, as Triton's statistics answer;
    memory figures are not tracked."""
    entry = model_statistics(
        "m", 2, 10, 3, {"success": (10, 5_000)}, 1_700_000_000_123, {8: (1, 4, 5, 6), 1: (2, 1, 2, 3)}
    )
    assert entry["last_inference"] == 1_700_000_000_123
    assert entry["batch_stats"] == [
        {
            "batch_size": 1,
            "compute_input": {"count": 2, "ns": 1},
            "compute_infer": {"count": 2, "ns": 2},
            "compute_output": {"count": 2, "ns": 3},
        },
        {
            "batch_size": 8,
            "compute_input": {"count": 1, "ns": 4},
            "compute_infer": {"count": 1, "ns": 5},
            "compute_output": {"count": 1, "ns": 6},
        },
    ]
    assert model_statistics("m", 2, 0, 0, {})["batch_stats"] == [] and entry["memory_usage"] == []
