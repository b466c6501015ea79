"""Tensor data on the KServe v2 wire: JSON ``data`` lists and raw little-endian buffers <-> numpy arrays.

Shared by the REST codec (``data`` / binary tensor data extension) and the gRPC codec (``raw_input_contents``
uses the same raw layout). Errors say what is wrong with the data; callers prefix the tensor and model.

>>> array_from_json([[1, 2], [3, 4]], "INT32", (2, 2)).dtype
dtype('int32')
>>> array_from_buffer(bytes(array_to_buffer(np.arange(3, dtype=np.float16), "FP16")), "FP16", (3,)).tolist()
[0.0, 1.0, 2.0]
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..dtypes import BYTES, deserialize_bytes, from_datatype, serialize_bytes
from ..errors import InvalidInputError, OutputValidationError

__all__ = [
    "DATATYPES",
    "array_from_buffer",
    "array_from_json",
    "array_to_buffer",
    "array_to_json",
    "datatype_of",
]

DATATYPES: tuple[str, ...] = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64")
DATATYPES += ("FP16", "FP32", "FP64", BYTES)

# The wire is little-endian whatever the host; on little-endian hosts these are the native dtypes.
_WIRE_DTYPES: dict[str, np.dtype[Any]] = {
    name: from_datatype(name) if sys.byteorder == "little" else from_datatype(name).newbyteorder("<")
    for name in DATATYPES
    if name != BYTES
}
_DATATYPE_OF: dict[np.dtype[Any], str] = {from_datatype(name): name for name in DATATYPES}

# numpy kinds a parsed JSON list may have for each datatype: JSON ints are fine for floats, not the reverse.
_JSON_KINDS = {name: "iuf" if name.startswith("FP") else "iu" for name in _WIRE_DTYPES}
_JSON_KINDS["BOOL"] = "b"


def datatype_of(dtype: np.dtype[Any]) -> str:
    """The KServe datatype of a normalized dtype (a `Tensor.dtype`): a dict lookup, cheap on the hot path."""
    return _DATATYPE_OF[dtype]


def array_from_json(data: Any, datatype: str, shape: Sequence[int]) -> np.ndarray:
    """An array of ``shape`` from a JSON ``data`` list, flat or nested (row-major), as Triton accepts it.

    BYTES elements are JSON strings (encoded as UTF-8), BOOL elements JSON true/false.
    """
    if not isinstance(data, list):
        raise InvalidInputError(f"'data' must be a JSON list, got {type(data).__name__}")
    array = _bytes_from_json(data) if datatype == BYTES else _numbers_from_json(data, datatype)
    count = math.prod(shape)
    if array.size != count:
        raise InvalidInputError(f"'data' holds {array.size} elements but shape {list(shape)} needs {count}")
    return array.reshape(shape)


def _numbers_from_json(data: list[Any], datatype: str) -> np.ndarray:
    try:
        parsed = np.array(data)
    except ValueError as exc:  # ragged nesting
        raise InvalidInputError(f"'data' is not a regular nested list: {exc}") from None
    if parsed.size == 0:
        return parsed.astype(_WIRE_DTYPES[datatype])
    if parsed.dtype.kind not in _JSON_KINDS[datatype]:
        wanted = {"b": "true/false", "iu": "integers", "iuf": "numbers"}[_JSON_KINDS[datatype]]
        raise InvalidInputError(f"{datatype} 'data' must hold {wanted}, got {_describe_kind(parsed)}")
    dtype = _WIRE_DTYPES[datatype]
    if dtype.kind in "iu" and parsed.dtype != dtype:
        info = np.iinfo(dtype)
        low, high = parsed.min(), parsed.max()
        if low < info.min or high > info.max:
            raise InvalidInputError(f"{datatype} 'data' holds {low if low < info.min else high}, out of range")
    return parsed.astype(dtype, copy=False)


def _describe_kind(array: np.ndarray) -> str:
    kind = array.dtype.kind
    return {"b": "booleans", "i": "integers", "u": "integers", "f": "floats", "U": "strings"}.get(kind, "mixed values")


def _bytes_from_json(data: list[Any]) -> np.ndarray:
    flat: list[bytes] = []
    _flatten_strings(data, flat)
    array = np.empty(len(flat), dtype=object)
    array[:] = flat
    return array


def _flatten_strings(data: list[Any], out: list[bytes]) -> None:
    for item in data:
        if isinstance(item, str):
            try:
                out.append(item.encode())
            except UnicodeEncodeError as exc:  # a lone surrogate such as "\udc80"
                raise InvalidInputError(f"BYTES 'data' holds a string that is not valid UTF-8: {exc}") from None
        elif isinstance(item, list):
            _flatten_strings(item, out)
        else:
            raise InvalidInputError(f"BYTES 'data' must hold strings, got {type(item).__name__} {item!r}")


def array_from_buffer(buffer: bytes | memoryview, datatype: str, shape: Sequence[int]) -> np.ndarray:
    """An array of ``shape`` over raw tensor bytes: a read-only view into ``buffer`` (no copy), except for
    BYTES, whose length-prefixed elements are decoded into an object array.
    """
    if datatype == BYTES:
        return deserialize_bytes(buffer, tuple(shape))
    dtype = _WIRE_DTYPES[datatype]
    needed = math.prod(shape) * dtype.itemsize
    if len(buffer) != needed:
        raise InvalidInputError(f"binary data holds {len(buffer)} bytes but {datatype} {list(shape)} needs {needed}")
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)


def array_to_json(array: np.ndarray, datatype: str) -> list[Any]:
    """A flat JSON list of the array's elements (row-major): FP16 as floats, BOOL as true/false, and BYTES as
    UTF-8 strings.

    A BYTES element that is not valid UTF-8 raises `OutputValidationError`: JSON cannot carry it (Triton
    would send invalid JSON), so the message tells the client to ask for the output as binary data.
    """
    flat = array.reshape(-1)
    if datatype != BYTES:
        return flat.astype(_WIRE_DTYPES[datatype], copy=False).tolist()
    items = flat.tolist()
    for i, item in enumerate(items):
        if isinstance(item, bytes):
            try:
                items[i] = item.decode()
            except UnicodeDecodeError:
                raise OutputValidationError(
                    f"BYTES element {i} is not valid UTF-8, so JSON cannot carry it; "
                    "request the output with binary_data=true"
                ) from None
        elif not isinstance(item, str):
            items[i] = str(item)
    return items


def array_to_buffer(array: np.ndarray, datatype: str) -> bytes | memoryview:
    """The raw wire bytes of an array: a view of it when it already is C-contiguous little-endian, else a
    converted copy; BYTES elements are length-prefixed. ``len()`` of the result is its size in bytes.
    """
    if datatype == BYTES:
        return serialize_bytes(array)
    flat = np.ascontiguousarray(array, dtype=_WIRE_DTYPES[datatype]).reshape(-1)
    return flat.view(np.uint8).data
