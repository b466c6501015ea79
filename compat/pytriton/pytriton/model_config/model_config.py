"""PyTriton's `ModelConfig` (``pytriton.model_config.model_config``)."""

from __future__ import annotations

import dataclasses

from .common import DynamicBatcher, ModelWarmup

__all__ = ["ModelConfig"]


@dataclasses.dataclass
class ModelConfig:
    """How a model is batched and run (`pybind_serve.ModelConfig`, with PyTriton's fields and defaults).

    ``response_cache`` caches responses (`pybind_serve.ModelConfig.response_cache`); ``model_warmup`` runs
    warmup requests on each instance before the model is ready.

    >>> ModelConfig().max_batch_size
    4
    """

    batching: bool = True
    max_batch_size: int = 4
    batcher: DynamicBatcher = dataclasses.field(default_factory=DynamicBatcher)
    response_cache: bool = False
    decoupled: bool = False
    model_warmup: list[ModelWarmup] | None = None
