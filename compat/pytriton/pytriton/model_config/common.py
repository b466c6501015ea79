"""PyTriton's configuration types (``pytriton.model_config.common``): mutable dataclasses with PyTriton's field
names, turned into pybind_serve's when a model is bound (`pytriton._mapping`)."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from typing import Any

from pybind_serve import TimeoutAction

__all__ = ["DeviceKind", "DynamicBatcher", "ModelWarmup", "QueuePolicy", "TimeoutAction", "WarmupInput"]


class DeviceKind(enum.Enum):
    """Where a model's instances run (Triton's instance group kind)."""

    KIND_AUTO = "KIND_AUTO"
    KIND_CPU = "KIND_CPU"
    KIND_GPU = "KIND_GPU"


@dataclasses.dataclass
class QueuePolicy:
    """A priority level's queue policy (`pybind_serve.QueuePolicy`, with PyTriton's field names and defaults).

    >>> QueuePolicy(default_timeout_microseconds=500).allow_timeout_override
    False
    """

    timeout_action: TimeoutAction = TimeoutAction.REJECT
    default_timeout_microseconds: int = 0
    allow_timeout_override: bool = False
    max_queue_size: int = 0


@dataclasses.dataclass
class DynamicBatcher:
    """Dynamic batching (`pybind_serve.DynamicBatcher`, with PyTriton's field names).

    >>> DynamicBatcher(max_queue_delay_microseconds=100, preferred_batch_size=[4, 8]).preferred_batch_size
    [4, 8]
    """

    max_queue_delay_microseconds: int = 0
    preferred_batch_size: list[int] | None = None
    preserve_ordering: bool = False
    priority_levels: int = 0
    default_priority_level: int = 0
    default_queue_policy: QueuePolicy | None = None
    priority_queue_policy: dict[int, QueuePolicy] | None = None


@dataclasses.dataclass
class WarmupInput:
    """One input of a warmup request (`pybind_serve.WarmupInput`): zeros, random data, or an ``.npy`` file."""

    dtype: Any
    shape: Sequence[int]
    zero_data: bool | None = False
    random_data: bool | None = False
    input_data_file: str | None = None


@dataclasses.dataclass
class ModelWarmup:
    """A warmup run before the model is ready (`pybind_serve.Warmup`): ``count`` requests of ``batch_size``."""

    name: str
    batch_size: int
    inputs: dict[str, WarmupInput]
    count: int
