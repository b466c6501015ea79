"""A call's inputs, from what the user passed to the arrays a codec encodes: named, positional (in the model's
input order) or one mapping; cast to the model's datatypes where that is safe; the batch axis of
``infer_sample`` added.

>>> metadata = ModelMetadata("m", (TensorMetadata("x", "FP32", (-1, 2)),), ())
>>> arrays = conform(gather((), {"x": [[1, 2]]}, metadata), metadata)
>>> arrays["x"].dtype, datatype_of("x", arrays["x"])
(dtype('float32'), 'FP32')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..dtypes import BYTES, from_datatype, is_bytes, to_datatype
from ..errors import ConfigurationError, InvalidInputError
from .model import ModelMetadata, TensorMetadata

__all__ = ["add_batch_axis", "conform", "datatype_of", "gather"]


def gather(args: tuple[Any, ...], named: Mapping[str, Any], metadata: ModelMetadata) -> dict[str, Any]:
    """The inputs by name: keywords, or positional values in the order of the model's inputs, or one mapping
    given positionally (for input names that clash with the options of an infer call)."""
    if args and named:
        raise InvalidInputError(
            f"model {metadata.name!r}: give inputs either by name or positionally (in the model's input order), "
            "not both"
        )
    if len(args) == 1 and isinstance(args[0], Mapping):
        return dict(args[0])
    if len(args) > len(metadata.inputs):
        raise InvalidInputError(
            f"model {metadata.name!r} has {len(metadata.inputs)} inputs "
            f"({', '.join(repr(t.name) for t in metadata.inputs)}), got {len(args)} positional values"
        )
    if args:  # fewer values than inputs: the last ones are optional, or the server says which are missing
        return {tensor.name: value for tensor, value in zip(metadata.inputs, args, strict=False)}
    return dict(named)


def conform(inputs: Mapping[str, Any], metadata: ModelMetadata) -> dict[str, np.ndarray]:
    """Each input as a numpy array of its declared datatype where that is a safe or same-kind cast (a list of
    floats for an FP32 input, float64 for FP32, int64 for FP64); others are left for the server to refuse with
    a message that names the model. Inputs the model does not declare are left as they are."""
    declared: dict[str, TensorMetadata] = {tensor.name: tensor for tensor in metadata.inputs}
    conformed = {}
    for name, value in inputs.items():
        tensor = declared.get(name)
        # A list of bytes and str for a BYTES input: numpy would make it a str array (and fail on non-ASCII bytes)
        as_objects = tensor is not None and tensor.datatype == BYTES and not isinstance(value, np.ndarray)
        try:
            array = np.asarray(value, dtype=object if as_objects else None)
        except ValueError as exc:  # a ragged nested list
            raise InvalidInputError(f"input {name!r} is not an array: {exc}") from None
        if tensor is not None:
            array = _cast(array, tensor.datatype)
        conformed[name] = array
    return conformed


def _cast(array: np.ndarray, datatype: str) -> np.ndarray:
    try:
        dtype = from_datatype(datatype)
    except InvalidInputError:  # a datatype we cannot carry (BF16): the encoder says so
        return array
    if array.dtype == dtype:
        return array
    if is_bytes(dtype):
        return array if is_bytes(array.dtype) else array.astype(object)
    if is_bytes(array.dtype) or not np.can_cast(array.dtype, dtype, "same_kind"):
        return array
    return array.astype(dtype)


def datatype_of(name: str, array: np.ndarray) -> str:
    """The KServe datatype an input array travels as; `InvalidInputError` for a dtype KServe cannot carry."""
    try:
        return to_datatype(array.dtype)
    except ConfigurationError as exc:
        raise InvalidInputError(f"input {name!r}: {exc}") from None


def add_batch_axis(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One sample as a batch of one."""
    return {name: array[np.newaxis, ...] for name, array in inputs.items()}
