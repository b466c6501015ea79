"""A served model's config as PyTriton's clients give it: a `TritonModelConfig` built from the config that
`pybind_serve.client` reads (`RemoteModelConfig`, whose ``document`` is Triton's model config JSON).

>>> from pybind_serve.client.model import config_from_document
>>> document = {"name": "m", "max_batch_size": 8, "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [2]}],
...             "output": [{"name": "y", "data_type": "TYPE_STRING", "dims": [1]}],
...             "dynamic_batching": {"max_queue_delay_microseconds": 100}}
>>> config = triton_model_config(config_from_document(document, "model 'm'"))
>>> config.model_name, config.batching, config.inputs[0].dtype, config.outputs[0].dtype
('m', True, <class 'numpy.float32'>, <class 'numpy.bytes_'>)
>>> config.batcher.max_queue_delay_microseconds
100
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from pybind_serve import TimeoutAction
from pybind_serve.client import RemoteModelConfig
from pybind_serve.dtypes import is_bytes
from pybind_serve.tensor import Tensor

from ..model_config.common import DeviceKind, DynamicBatcher, QueuePolicy
from ..model_config.triton_model_config import TensorSpec, TritonModelConfig

__all__ = ["triton_model_config"]


def triton_model_config(remote: RemoteModelConfig) -> TritonModelConfig:
    """PyTriton's view of a served model's config (inputs' and outputs' dtypes as numpy scalar types, BYTES as
    ``np.bytes_``, as PyTriton's parser gives them)."""
    document = remote.document
    return TritonModelConfig(
        model_name=remote.name,
        max_batch_size=remote.max_batch_size,
        batching=remote.batching,
        batcher=_batcher(document.get("dynamic_batching")),
        instance_group=_instance_group(document.get("instance_group")),
        decoupled=remote.decoupled,
        backend_parameters=_parameters(document.get("parameters")),
        inputs=[_spec(tensor) for tensor in remote.inputs] or None,
        outputs=[_spec(tensor) for tensor in remote.outputs] or None,
        response_cache=_response_cache(document.get("response_cache")),
    )


def _spec(tensor: Tensor) -> TensorSpec:
    dtype = np.bytes_ if is_bytes(tensor.dtype) else tensor.dtype.type
    return TensorSpec(tensor.name, tuple(tensor.shape), dtype, tensor.optional)


def _batcher(section: Any) -> DynamicBatcher | None:
    if not isinstance(section, Mapping):
        return None
    default = section.get("default_queue_policy")
    levels = section.get("priority_queue_policy") or {}
    return DynamicBatcher(
        max_queue_delay_microseconds=int(section.get("max_queue_delay_microseconds", 0)),
        preferred_batch_size=[int(size) for size in section.get("preferred_batch_size") or ()] or None,
        preserve_ordering=bool(section.get("preserve_ordering", False)),
        priority_levels=int(section.get("priority_levels", 0)),
        default_priority_level=int(section.get("default_priority_level", 0)),
        default_queue_policy=_queue_policy(default) if isinstance(default, Mapping) else None,
        priority_queue_policy={int(level): _queue_policy(policy) for level, policy in levels.items()} or None,
    )


def _queue_policy(section: Mapping[str, Any]) -> QueuePolicy:
    return QueuePolicy(
        timeout_action=TimeoutAction(section.get("timeout_action", "REJECT")),
        default_timeout_microseconds=int(section.get("default_timeout_microseconds", 0)),
        allow_timeout_override=bool(section.get("allow_timeout_override", False)),
        max_queue_size=int(section.get("max_queue_size", 0)),
    )


def _response_cache(section: Any) -> bool | None:
    """True when the response cache is on, else None: as the servers' own `TritonModelConfig` has it."""
    return True if isinstance(section, Mapping) and section.get("enable") else None


def _instance_group(groups: Any) -> dict[DeviceKind, int | None]:
    return {DeviceKind(group["kind"]): group.get("count") for group in groups or () if "kind" in group}


def _parameters(parameters: Any) -> dict[str, str]:
    """Triton's ``parameters`` map (name to ``{"string_value": ...}``) as PyTriton's ``backend_parameters``."""
    if not isinstance(parameters, Mapping):
        return {}
    return {name: str((value or {}).get("string_value", "")) for name, value in parameters.items()}
