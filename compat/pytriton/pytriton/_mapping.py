"""PyTriton's configuration objects, turned into pybind_serve's: names and argument mapping, nothing else."""

from __future__ import annotations

from collections.abc import Sequence

import pybind_serve

from .model_config import DynamicBatcher, ModelConfig, ModelWarmup, QueuePolicy, Tensor

__all__ = ["serve_config", "serve_tensors"]


def serve_tensors(tensors: Sequence[Tensor], prefix: str) -> list[pybind_serve.Tensor]:
    """PyTriton tensors as pybind_serve's; an unnamed one is ``<prefix>_<i>``, counting from 1.

    >>> tensors = [Tensor(shape=(-1,), dtype=float), Tensor(shape=(1,), dtype=int, name="n")]
    >>> [t.name for t in serve_tensors(tensors, "INPUT")]
    ['INPUT_1', 'n']
    """
    return [
        pybind_serve.Tensor(
            t.name or f"{prefix}_{index}", t.dtype, tuple(t.shape), optional=bool(getattr(t, "optional", False))
        )
        for index, t in enumerate(tensors, start=1)
    ]


def _queue_policy(policy: QueuePolicy) -> pybind_serve.QueuePolicy:
    return pybind_serve.QueuePolicy(
        timeout_action=pybind_serve.TimeoutAction(getattr(policy.timeout_action, "value", policy.timeout_action)),
        default_timeout_us=policy.default_timeout_microseconds,
        allow_timeout_override=policy.allow_timeout_override,
        max_queue_size=policy.max_queue_size,
    )


def _batcher(batcher: DynamicBatcher) -> pybind_serve.DynamicBatcher:
    return pybind_serve.DynamicBatcher(
        max_queue_delay_us=batcher.max_queue_delay_microseconds,
        preferred_batch_sizes=tuple(batcher.preferred_batch_size or ()),
        priority_levels=batcher.priority_levels,
        default_priority_level=batcher.default_priority_level,
        default_queue_policy=(
            _queue_policy(batcher.default_queue_policy)
            if batcher.default_queue_policy is not None
            else pybind_serve.QueuePolicy()
        ),
        priority_queue_policies={
            level: _queue_policy(policy) for level, policy in (batcher.priority_queue_policy or {}).items()
        },
        preserve_ordering=batcher.preserve_ordering,
    )


def _warmup(warmup: ModelWarmup) -> pybind_serve.Warmup:
    return pybind_serve.Warmup(
        name=warmup.name,
        batch_size=warmup.batch_size,
        inputs={
            name: pybind_serve.WarmupInput(
                dtype=spec.dtype,
                shape=tuple(spec.shape),
                zero_data=bool(spec.zero_data),
                random_data=bool(spec.random_data),
                input_data_file=spec.input_data_file,
            )
            for name, spec in warmup.inputs.items()
        },
        count=warmup.count,
    )


def serve_config(config: ModelConfig) -> pybind_serve.ModelConfig:
    """A PyTriton `ModelConfig` as pybind_serve's (the model runs in the binding process, as PyTriton's does).

    >>> config = ModelConfig(max_batch_size=8, batcher=DynamicBatcher(max_queue_delay_microseconds=100))
    >>> serve_config(config).batcher.max_queue_delay_us
    100
    """
    return pybind_serve.ModelConfig(
        batching=config.batching,
        max_batch_size=config.max_batch_size,
        batcher=_batcher(config.batcher),
        decoupled=config.decoupled,
        response_cache=config.response_cache,
        warmup=tuple(_warmup(w) for w in config.model_warmup or ()),
    )
