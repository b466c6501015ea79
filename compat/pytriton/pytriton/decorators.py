"""PyTriton's decorators (``pytriton.decorators``): pybind_serve's, under PyTriton's names and arguments.

`batch`, `sample`, `group_by_keys`, `group_by_values`, `fill_optionals`, `first_value` and `pad_batch` are
pybind_serve's own (written to PyTriton's semantics); `triton_context` hands the function the bound model's
`TritonModelConfig` through ``triton_context.model_configs``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import numpy as np
import wrapt

import pybind_serve
from pybind_serve import batch, fill_optionals, first_value, group_by_keys, group_by_values, pad_batch, sample

from .constants import TRITON_CONTEXT_FIELD_NAME
from .exceptions import PyTritonValidationError
from .model_config.triton_model_config import TritonModelConfig

__all__ = [
    "ConstantPadder",
    "InferenceRequest",
    "InferenceRequests",
    "InferenceResult",
    "InferenceResults",
    "InputNames",
    "ModelConfigDict",
    "TritonContext",
    "batch",
    "convert_output",
    "fill_optionals",
    "first_value",
    "get_inference_request_batch_size",
    "get_model_config",
    "get_triton_context",
    "group_by_keys",
    "group_by_values",
    "pad_batch",
    "sample",
    "triton_context",
]

InputNames = list[str]
InferenceRequest = dict[str, np.ndarray]
InferenceRequests = list[InferenceRequest] | tuple[InferenceRequest, ...]
InferenceResult = dict[str, np.ndarray]
InferenceResults = list[InferenceResult] | tuple[InferenceResult, ...]

# The configurations of the models this process bound, by (name, version): filled by `pytriton.triton`.
_BOUND: dict[tuple[str, int], TritonModelConfig] = {}


class ConstantPadder(pybind_serve.ConstantPadder):
    """`pybind_serve.ConstantPadder` with PyTriton's argument name.

    >>> [a.tolist() for a in ConstantPadder(pad_value=9)([np.ones((1, 1)), np.ones((1, 2))])]
    [[[1.0, 9.0]], [[1.0, 1.0]]]
    """

    def __init__(self, pad_value: Any = 0) -> None:
        super().__init__(pad_value)


def get_inference_request_batch_size(inference_request: InferenceRequest) -> int:
    """The batch size of a request: the first dim of its first input.

    >>> get_inference_request_batch_size({"x": np.zeros((3, 2))})
    3
    """
    first = next(iter(inference_request.values()))
    return int(first.shape[0])


class ModelConfigDict(MutableMapping[Any, TritonModelConfig]):
    """The model configuration of each bound callable; here every key answers the model now running."""

    def __init__(self) -> None:
        self._data: dict[str, TritonModelConfig] = {}

    def __getitem__(self, infer_callable: Any) -> TritonModelConfig:
        key = str(infer_callable)
        if key in self._data:
            return self._data[key]
        return _current_model_config()

    def __setitem__(self, infer_callable: Any, item: TritonModelConfig) -> None:
        self._data[str(infer_callable)] = item

    def __delitem__(self, infer_callable: Any) -> None:
        del self._data[str(infer_callable)]

    def __len__(self) -> int:
        return len(self._data)

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)


@dataclasses.dataclass
class TritonContext:
    """What `triton_context` passes: ``model_configs[fn]`` is the running model's `TritonModelConfig`."""

    model_configs: ModelConfigDict = dataclasses.field(default_factory=ModelConfigDict)


def _current_model_config() -> TritonModelConfig:
    context = pybind_serve.worker_context()
    if context is None:
        raise PyTritonValidationError("Wrapped function or object must bound with triton to get  __triton_context__")
    found = _BOUND.get((context.model, context.version))
    if found is None:
        raise PyTritonValidationError(f"model {context.model!r} was not bound through pytriton.triton")
    return found


def get_triton_context(wrapped: Any, instance: Any) -> TritonContext:
    """The `TritonContext` of the model running the call."""
    _current_model_config()
    return TritonContext()


def get_model_config(wrapped: Any, instance: Any) -> TritonModelConfig:
    """The `TritonModelConfig` of the model running the call."""
    return _current_model_config()


def convert_output(
    outputs: dict[str, Any] | list[Any] | tuple[Any, ...],
    wrapped: Any = None,
    instance: Any = None,
    model_config: TritonModelConfig | None = None,
) -> dict[str, Any]:
    """Outputs given as a list or tuple, named in the order of the model's outputs."""
    if isinstance(outputs, dict):
        return outputs
    if isinstance(outputs, (list, tuple)):
        config = model_config or _current_model_config()
        names = [o.name for o in config.outputs or ()]
        if len(outputs) != len(names):
            raise PyTritonValidationError("Outputs length different than config outputs length")
        return dict(zip(names, outputs, strict=True))
    raise PyTritonValidationError(f"Unsupported output type {type(outputs)}.")


@wrapt.decorator
def triton_context(wrapped: Callable[..., Any], instance: Any, args: Any, kwargs: Any) -> Any:
    """Pass the function a ``triton_context`` keyword argument (a `TritonContext`)."""
    kwargs[TRITON_CONTEXT_FIELD_NAME] = get_triton_context(wrapped, instance)
    return wrapped(*args, **kwargs)
