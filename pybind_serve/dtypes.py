"""numpy dtype <-> KServe v2 datatype (``FP32``) <-> Triton config type (``TYPE_FP32``), and BYTES tensors.

BYTES tensors hold variable-length byte strings; in memory they are numpy ``object`` arrays of `bytes`,
on the wire each element is a 4-byte little-endian length followed by its bytes.

>>> to_datatype(np.dtype("float32")), to_config_type(np.dtype("float32"))
('FP32', 'TYPE_FP32')
>>> deserialize_bytes(serialize_bytes(np.array([b"ab", b""], dtype=object)), (2,)).tolist()
[b'ab', b'']
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from .errors import ConfigurationError, InvalidInputError

__all__ = [
    "BYTES",
    "deserialize_bytes",
    "from_datatype",
    "is_bytes",
    "normalize_dtype",
    "serialize_bytes",
    "to_config_type",
    "to_datatype",
]

BYTES = "BYTES"
_OBJECT = np.dtype(object)

_DATATYPES: dict[np.dtype[Any], str] = {
    np.dtype(np.bool_): "BOOL",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.uint16): "UINT16",
    np.dtype(np.uint32): "UINT32",
    np.dtype(np.uint64): "UINT64",
    np.dtype(np.int8): "INT8",
    np.dtype(np.int16): "INT16",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.float16): "FP16",
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
    _OBJECT: BYTES,
}
_DTYPES = {name: dtype for dtype, name in _DATATYPES.items()}
_CONFIG_TYPES = {name: "TYPE_STRING" if name == BYTES else f"TYPE_{name}" for name in _DTYPES}
_LENGTH = struct.Struct("<I")


def normalize_dtype(dtype: Any) -> np.dtype[Any]:
    """The canonical numpy dtype for a user's spelling: a numpy dtype or anything `numpy.dtype` takes, or a
    KServe datatype name (``"FP32"``, ``"BYTES"``: none of them is a numpy spelling, so there is no ambiguity).
    ``bytes``, ``np.bytes_``, ``str``, ``object`` and ``"BYTES"`` all mean BYTES (an object array). Raises
    `ConfigurationError` for a type KServe cannot carry.

    >>> normalize_dtype(bytes), normalize_dtype("float32"), normalize_dtype("FP16")
    (dtype('O'), dtype('float32'), dtype('float16'))
    """
    if dtype is None:  # np.dtype(None) is float64: never what someone who forgot the dtype meant
        raise ConfigurationError("dtype is required (e.g. np.float32, or bytes for BYTES)")
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise ConfigurationError(
            f"dtype {dtype!r} is not a numpy dtype or a KServe datatype; use e.g. np.float32, bytes (or str) for "
            f"BYTES, or a KServe datatype name: {', '.join(sorted(_DTYPES))}"
        ) from exc
    if dt.kind in "OSUa":
        return _OBJECT
    if dt.byteorder == ">":
        dt = dt.newbyteorder("<")
    if dt not in _DATATYPES:
        supported = ", ".join(sorted(_DTYPES))
        raise ConfigurationError(f"dtype {dt} has no KServe datatype; supported: {supported}")
    return dt


def is_bytes(dtype: np.dtype[Any]) -> bool:
    return dtype.kind in "OSUa"


def to_datatype(dtype: Any) -> str:
    """The KServe v2 datatype name (``FP32``, ``BYTES``) of a numpy dtype."""
    return _DATATYPES[normalize_dtype(dtype)]


def from_datatype(datatype: str) -> np.dtype[Any]:
    """The numpy dtype of a KServe v2 datatype name; `InvalidInputError` for an unknown one."""
    try:
        return _DTYPES[datatype]
    except KeyError:
        raise InvalidInputError(f"unknown datatype {datatype!r}") from None


def to_config_type(dtype: Any) -> str:
    """The Triton model-config type (``TYPE_FP32``, ``TYPE_STRING``) of a numpy dtype."""
    return _CONFIG_TYPES[to_datatype(dtype)]


def _as_bytes(item: Any) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode()
    if isinstance(item, (bytearray, memoryview, np.bytes_)):
        return bytes(item)
    return str(item).encode()


def serialize_bytes(array: np.ndarray) -> bytes:
    """Encode a BYTES tensor (any shape, C order) as length-prefixed elements."""
    parts: list[bytes] = []
    for item in array.reshape(-1):
        data = _as_bytes(item)
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def deserialize_bytes(buffer: bytes | memoryview, shape: tuple[int, ...]) -> np.ndarray:
    """Decode length-prefixed elements into an object array of `bytes` of the given shape.

    Raises `InvalidInputError` when the framing is cut short or the count does not match the shape.
    """
    view = memoryview(buffer)
    count = int(np.prod(shape, dtype=object)) if shape else 1
    if count * 4 > len(view):  # each element takes at least its 4-byte length: check before allocating
        raise InvalidInputError(f"BYTES data holds fewer than the {count} elements of shape {list(shape)}")
    out = np.empty(count, dtype=object)
    offset, end = 0, len(view)
    for i in range(count):
        if offset + 4 > end:
            raise InvalidInputError(f"BYTES data holds fewer than the {count} elements of shape {list(shape)}")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > end:
            raise InvalidInputError(f"BYTES element {i} claims {length} bytes but only {end - offset} remain")
        out[i] = bytes(view[offset : offset + length])
        offset += length
    if offset != end:
        raise InvalidInputError(
            f"BYTES data has {end - offset} bytes left after the {count} elements of shape {list(shape)}"
        )
    return out.reshape(shape)
