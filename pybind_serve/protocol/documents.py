"""The server metadata, model metadata, model config and repository index documents, as Triton answers them.

The model config follows Triton's ``model_config.proto`` field names (snake_case, numeric dims, the batch
dim left out of ``dims``), so ``perf_analyzer`` reads it as it reads Triton's and the gRPC front can build the
protobuf message from the same dict (``json_format.ParseDict``).

>>> import numpy as np
>>> from pybind_serve.config import ModelConfig
>>> spec = ModelSpec("add", 1, (Tensor("x", np.float32, (3,)),), (Tensor("y", np.float32, (3,)),), ModelConfig())
>>> model_metadata(spec)["inputs"]
[{'name': 'x', 'datatype': 'FP32', 'shape': [-1, 3]}]
>>> model_config(spec)["input"][0]["dims"], model_config(spec)["max_batch_size"]
([3], 16)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..config import DynamicBatcher, QueuePolicy
from ..placement import instance_groups
from ..spec import ModelSpec
from ..tensor import Tensor

__all__ = ["model_config", "model_metadata", "model_statistics", "repository_index", "server_metadata"]

SERVER_NAME = "pybind_serve"
BACKEND = "python"
DURATIONS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit", "cache_miss")


def server_metadata(version: str, extensions: list[str]) -> dict[str, Any]:
    """``GET /v2``: the server's name, version and the protocol extensions it supports."""
    return {"name": SERVER_NAME, "version": version, "extensions": list(extensions)}


def model_metadata(spec: ModelSpec) -> dict[str, Any]:
    """``GET /v2/models/{name}[/versions/{v}]``: tensor names, datatypes and shapes (batch dim as -1)."""
    batch = [-1] if spec.config.batching else []
    return {
        "name": spec.name,
        "versions": [str(spec.version)],
        "platform": BACKEND,
        "inputs": [_tensor_metadata(tensor, batch) for tensor in spec.inputs],
        "outputs": [_tensor_metadata(tensor, batch) for tensor in spec.outputs],
    }


def _tensor_metadata(tensor: Tensor, batch: list[int]) -> dict[str, Any]:
    return {"name": tensor.name, "datatype": tensor.datatype, "shape": [*batch, *tensor.shape]}


def model_config(spec: ModelSpec) -> dict[str, Any]:
    """``GET /v2/models/{name}/config``: the model config as Triton's ``/config`` answers it for a Python
    backend model (``"backend": "python"``, empty ``platform``). ``dynamic_batching`` is present only when
    the model batches, as ``perf_analyzer`` takes its presence to mean a dynamic batcher.
    """
    config = spec.config
    document: dict[str, Any] = {
        "name": spec.name,
        "platform": "",
        "backend": BACKEND,
        "version_policy": {"latest": {"num_versions": 1}},
        "max_batch_size": config.effective_max_batch_size,
        "input": [_input_config(tensor) for tensor in spec.inputs],
        "output": [_output_config(tensor) for tensor in spec.outputs],
        "instance_group": instance_groups(spec.name, config.devices, config.instances or spec.threads),
        "model_transaction_policy": {"decoupled": config.decoupled},
        "model_warmup": [warmup.document() for warmup in config.warmup],
        "response_cache": {"enable": config.response_cache},
    }
    if config.batching:
        document["dynamic_batching"] = _dynamic_batching(config.batcher)
    return document


def _input_config(tensor: Tensor) -> dict[str, Any]:
    return {
        "name": tensor.name,
        "data_type": tensor.config_type,
        "format": "FORMAT_NONE",
        "dims": list(tensor.shape),
        "is_shape_tensor": False,
        "allow_ragged_batch": False,
        "optional": tensor.optional,
    }


def _output_config(tensor: Tensor) -> dict[str, Any]:
    return {
        "name": tensor.name,
        "data_type": tensor.config_type,
        "dims": list(tensor.shape),
        "label_filename": "",
        "is_shape_tensor": False,
    }


def _dynamic_batching(batcher: DynamicBatcher) -> dict[str, Any]:
    return {
        "preferred_batch_size": list(batcher.preferred_batch_sizes),
        "max_queue_delay_microseconds": batcher.max_queue_delay_us,
        "preserve_ordering": batcher.preserve_ordering,
        "priority_levels": batcher.priority_levels,
        "default_priority_level": batcher.default_priority_level,
        "default_queue_policy": _queue_policy(batcher.default_queue_policy),
        # JSON object keys are strings; protobuf's JSON mapping reads them back as the uint64 levels.
        "priority_queue_policy": {
            str(level): _queue_policy(policy) for level, policy in sorted(batcher.priority_queue_policies.items())
        },
    }


def _queue_policy(policy: QueuePolicy) -> dict[str, Any]:
    return {
        "timeout_action": policy.timeout_action.value,
        "default_timeout_microseconds": policy.default_timeout_us,
        "allow_timeout_override": policy.allow_timeout_override,
        "max_queue_size": policy.max_queue_size,
    }


def repository_index(entries: list[tuple[str, int, str, str]]) -> list[dict[str, Any]]:
    """``POST /v2/repository/index``: one ``{name, version, state, reason}`` per (name, version, state,
    reason), state ``READY`` or ``UNAVAILABLE``, version as a string as Triton sends it.

    >>> repository_index([("add", 1, "READY", "")])
    [{'name': 'add', 'version': '1', 'state': 'READY', 'reason': ''}]
    """
    return [
        {"name": name, "version": str(version), "state": state, "reason": reason}
        for name, version, state, reason in entries
    ]


def model_statistics(
    name: str,
    version: int,
    inference_count: int,
    execution_count: int,
    durations: dict[str, tuple[int, int]],
    last_inference_ms: int = 0,
    batch_durations: Mapping[int, tuple[int, int, int, int]] | None = None,
) -> dict[str, Any]:
    """One ``model_stats`` entry of Triton's statistics answer (``GET /v2/models/{name}/stats``, gRPC
    ``ModelStatistics``). ``durations`` maps `DURATIONS` names to (count, cumulative ns); any not given is zero.
    ``last_inference_ms`` is when the model last ran (ms since the epoch, 0: never); ``batch_durations`` maps
    each executed batch size to (executions, compute input ns, compute infer ns, compute output ns), listed by
    size as Triton's ``batch_stats``. Memory figures are not tracked (empty).

    >>> model_statistics("add", 1, 8, 2, {"success": (8, 1_000)})["inference_stats"]["success"]
    {'count': 8, 'ns': 1000}
    >>> model_statistics("add", 1, 8, 2, {}, 1_700_000_000_000, {4: (2, 10, 20, 30)})["batch_stats"][0]["compute_infer"]
    {'count': 2, 'ns': 20}
    """
    return {
        "name": name,
        "version": str(version),
        "last_inference": last_inference_ms,
        "inference_count": inference_count,
        "execution_count": execution_count,
        "inference_stats": {
            key: {"count": count, "ns": ns} for key in DURATIONS for count, ns in [durations.get(key, (0, 0))]
        },
        "batch_stats": [
            {
                "batch_size": size,
                "compute_input": {"count": count, "ns": input_ns},
                "compute_infer": {"count": count, "ns": infer_ns},
                "compute_output": {"count": count, "ns": output_ns},
            }
            for size, (count, input_ns, infer_ns, output_ns) in sorted((batch_durations or {}).items())
        ],
        "memory_usage": [],
    }
