"""PyTriton's `TritonModelConfig` (``pytriton.model_config.triton_model_config``): a bound model's whole
configuration, as ``triton_context`` and ``get_model_config`` hand it to inference functions."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from .common import DeviceKind, DynamicBatcher

__all__ = ["TensorSpec", "TritonModelConfig"]


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """A named input or output."""

    name: str
    shape: tuple[int, ...]
    dtype: Any
    optional: bool | None = False


@dataclasses.dataclass
class TritonModelConfig:
    """A bound model's configuration (names as in PyTriton)."""

    model_name: str
    model_version: int = 1
    max_batch_size: int = 4
    batching: bool = True
    batcher: DynamicBatcher | None = None
    instance_group: dict[DeviceKind, int | None] = dataclasses.field(default_factory=dict)
    decoupled: bool = False
    backend_parameters: dict[str, str] = dataclasses.field(default_factory=dict)
    inputs: Sequence[TensorSpec] | None = None
    outputs: Sequence[TensorSpec] | None = None
    response_cache: Any = None
