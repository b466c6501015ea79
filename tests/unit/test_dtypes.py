"""numpy dtype <-> KServe datatype <-> Triton config type, and the BYTES wire framing."""

from __future__ import annotations

import re
import struct
from typing import Any

import numpy as np
import pytest

from pybind_serve.dtypes import (
    BYTES,
    deserialize_bytes,
    from_datatype,
    is_bytes,
    normalize_dtype,
    serialize_bytes,
    to_config_type,
    to_datatype,
)
from pybind_serve.errors import ConfigurationError, InvalidInputError

SUPPORTED = [
    (np.bool_, "BOOL", "TYPE_BOOL"),
    (np.uint8, "UINT8", "TYPE_UINT8"),
    (np.uint16, "UINT16", "TYPE_UINT16"),
    (np.uint32, "UINT32", "TYPE_UINT32"),
    (np.uint64, "UINT64", "TYPE_UINT64"),
    (np.int8, "INT8", "TYPE_INT8"),
    (np.int16, "INT16", "TYPE_INT16"),
    (np.int32, "INT32", "TYPE_INT32"),
    (np.int64, "INT64", "TYPE_INT64"),
    (np.float16, "FP16", "TYPE_FP16"),
    (np.float32, "FP32", "TYPE_FP32"),
    (np.float64, "FP64", "TYPE_FP64"),
    (object, "BYTES", "TYPE_STRING"),
]


def frame(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


@pytest.mark.parametrize(("dtype", "datatype", "config_type"), SUPPORTED)
def test_round_trip(dtype: Any, datatype: str, config_type: str) -> None:
    assert to_datatype(np.dtype(dtype)) == datatype
    assert from_datatype(datatype) == np.dtype(dtype)
    assert to_datatype(from_datatype(datatype)) == datatype
    assert to_config_type(np.dtype(dtype)) == config_type


def test_every_datatype_is_covered() -> None:
    names = [datatype for _, datatype, _ in SUPPORTED]
    assert len(set(names)) == 13
    assert BYTES == "BYTES"


@pytest.mark.parametrize("spelling", [bytes, str, object, np.bytes_, np.str_, "S3", "U7", np.dtype("O")])
def test_bytes_spellings(spelling: Any) -> None:
    assert normalize_dtype(spelling) == np.dtype(object)
    assert to_datatype(spelling) == BYTES
    assert to_config_type(spelling) == "TYPE_STRING"


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("float32", np.float32),
        (float, np.float64),
        (int, np.int64),
        (bool, np.bool_),
        ("i2", np.int16),
        (np.longlong, np.int64),
    ],
)
def test_normalize_common_spellings(spelling: Any, expected: Any) -> None:
    assert normalize_dtype(spelling) == np.dtype(expected)


@pytest.mark.parametrize(
    ("spelling", "datatype"), [(">f4", "FP32"), (">i8", "INT64"), (">u4", "UINT32"), (">f8", "FP64")]
)
def test_big_endian_is_normalised(spelling: str, datatype: str) -> None:
    dt = normalize_dtype(spelling)
    assert dt.byteorder in "=<"
    assert to_datatype(spelling) == datatype
    assert to_config_type(spelling) == f"TYPE_{datatype}"


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128, "datetime64[s]", "timedelta64", "V8", np.longdouble])
def test_unsupported_dtype(dtype: Any) -> None:
    supported = "BOOL, BYTES, FP16, FP32, FP64, INT16, INT32, INT64, INT8, UINT16, UINT32, UINT64, UINT8"
    with pytest.raises(ConfigurationError, match=re.escape(f"has no KServe datatype; supported: {supported}")):
        normalize_dtype(dtype)
    with pytest.raises(ConfigurationError):
        to_datatype(dtype)


def test_none_is_not_float64() -> None:
    with pytest.raises(ConfigurationError, match=re.escape("dtype is required (e.g. np.float32, or bytes for BYTES)")):
        normalize_dtype(None)


def test_not_a_dtype() -> None:
    with pytest.raises(ConfigurationError, match=r"dtype 'nope' is not a numpy dtype or a KServe datatype") as info:
        normalize_dtype("nope")
    assert "bytes (or str) for BYTES" in str(info.value) and "FP32" in str(info.value)


@pytest.mark.parametrize(("dtype", "datatype"), [(dtype, datatype) for dtype, datatype, _ in SUPPORTED])
def test_kserve_datatype_names_are_dtypes(dtype: Any, datatype: str) -> None:
    """``"FP32"``, ``"BYTES"``...: numpy takes none of them, so each means its KServe datatype, unambiguously."""
    with pytest.raises(TypeError):
        np.dtype(datatype)
    assert normalize_dtype(datatype) == np.dtype(dtype)
    assert to_datatype(datatype) == datatype


@pytest.mark.parametrize("spelling", ["fp32", "TYPE_FP32", "STRING", "BF16"])
def test_only_the_exact_kserve_names_are_taken(spelling: str) -> None:
    with pytest.raises(ConfigurationError, match="is not a numpy dtype or a KServe datatype"):
        normalize_dtype(spelling)


@pytest.mark.parametrize("datatype", ["FLOAT32", "fp32", "TYPE_FP32", "STRING", "BF16", ""])
def test_unknown_datatype(datatype: str) -> None:
    with pytest.raises(InvalidInputError, match=re.escape(f"unknown datatype {datatype!r}")) as info:
        from_datatype(datatype)
    assert info.value.http_status == 400


@pytest.mark.parametrize(("dtype", "expected"), [("O", True), ("S2", True), ("U2", True), ("f4", False), ("u1", False)])
def test_is_bytes(dtype: str, expected: bool) -> None:
    assert is_bytes(np.dtype(dtype)) is expected


# --- BYTES framing -----------------------------------------------------------------------------------------


def test_serialize_frames_each_element_with_a_little_endian_length() -> None:
    array = np.array([b"ab", b"", b"xyz"], dtype=object)
    assert serialize_bytes(array) == b"\x02\x00\x00\x00ab\x00\x00\x00\x00\x03\x00\x00\x00xyz"


def test_serialize_encodes_str_as_utf8() -> None:
    array = np.array(["é", "ab"], dtype=object)
    assert serialize_bytes(array) == frame("é".encode(), b"ab")
    assert serialize_bytes(np.array(["é", "ab"])) == frame("é".encode(), b"ab")  # a "U" array too


def test_serialize_other_buffers_and_objects() -> None:
    array = np.array([bytearray(b"ba"), memoryview(b"mv"), np.bytes_(b"nb"), 7], dtype=object)
    assert serialize_bytes(array) == frame(b"ba", b"mv", b"nb", b"7")


def test_serialize_walks_multi_dim_arrays_in_c_order() -> None:
    array = np.array([[b"a", b"b", b"c"], [b"d", b"e", b"f"]], dtype=object)
    assert serialize_bytes(array) == frame(b"a", b"b", b"c", b"d", b"e", b"f")
    assert serialize_bytes(array.T) == frame(b"a", b"d", b"b", b"e", b"c", b"f")


def test_serialize_empty() -> None:
    assert serialize_bytes(np.empty((0, 3), dtype=object)) == b""


@pytest.mark.parametrize(
    "items",
    [[b"a"], [b"", b""], [b"\x00\xff" * 100, b"x"], ["hé".encode()] * 6],
)
@pytest.mark.parametrize("shape_of", [lambda n: (n,), lambda n: (1, n), lambda n: (n, 1)])
def test_round_trip_bytes(items: list[bytes], shape_of: Any) -> None:
    shape = shape_of(len(items))
    array = np.empty(len(items), dtype=object)
    array[:] = items
    array = array.reshape(shape)
    out = deserialize_bytes(serialize_bytes(array), shape)
    assert out.dtype == np.dtype(object)
    assert out.shape == shape
    assert out.tolist() == array.tolist()
    assert all(type(x) is bytes for x in out.reshape(-1))


def test_round_trip_multi_dim() -> None:
    array = np.array([[b"a", b""], [b"cc", b"ddd"], [b"", b"f"]], dtype=object)
    out = deserialize_bytes(serialize_bytes(array), (3, 2))
    assert out.tolist() == [[b"a", b""], [b"cc", b"ddd"], [b"", b"f"]]


def test_deserialize_strings_come_back_as_bytes() -> None:
    out = deserialize_bytes(serialize_bytes(np.array(["hé", ""], dtype=object)), (2,))
    assert out.tolist() == ["hé".encode(), b""]


def test_deserialize_scalar_shape() -> None:
    out = deserialize_bytes(frame(b"only"), ())
    assert out.shape == ()
    assert out.item() == b"only"


def test_deserialize_zero_elements() -> None:
    out = deserialize_bytes(b"", (0, 4))
    assert out.shape == (0, 4)
    assert out.dtype == np.dtype(object)


def test_deserialize_accepts_a_memoryview() -> None:
    data = bytearray(b"junk" + frame(b"ab", b"c"))
    out = deserialize_bytes(memoryview(data)[4:], (2,))
    assert out.tolist() == [b"ab", b"c"]
    data[8:10] = b"zz"  # the result is a copy, not a view
    assert out.tolist() == [b"ab", b"c"]


def test_deserialize_too_few_elements() -> None:
    with pytest.raises(InvalidInputError, match=re.escape("BYTES data holds fewer than the 3 elements of shape [3]")):
        deserialize_bytes(frame(b"a", b"b"), (3,))


def test_deserialize_truncated_length_prefix() -> None:
    with pytest.raises(InvalidInputError, match=re.escape("fewer than the 2 elements of shape [1, 2]")):
        deserialize_bytes(frame(b"a") + b"\x01\x00", (1, 2))


def test_deserialize_truncated_element() -> None:
    data = frame(b"ok", b"hello")[:-2]
    with pytest.raises(InvalidInputError, match=re.escape("BYTES element 1 claims 5 bytes but only 3 remain")):
        deserialize_bytes(data, (2,))


def test_deserialize_trailing_bytes() -> None:
    with pytest.raises(
        InvalidInputError, match=re.escape("BYTES data has 3 bytes left after the 2 elements of shape [2, 1]")
    ):
        deserialize_bytes(frame(b"a", b"b") + b"xyz", (2, 1))


def test_deserialize_more_elements_than_the_shape() -> None:
    with pytest.raises(InvalidInputError, match=re.escape("has 5 bytes left after the 1 elements of shape [1]")):
        deserialize_bytes(frame(b"a", b"b"), (1,))


@pytest.mark.parametrize("shape", [(2**40,), (1, 2**62)])
def test_deserialize_a_huge_shape_is_rejected_before_allocating(shape: tuple[int, ...]) -> None:
    with pytest.raises(InvalidInputError, match="fewer than the"):
        deserialize_bytes(frame(b"a"), shape)


def test_deserialize_data_for_an_empty_shape() -> None:
    with pytest.raises(InvalidInputError, match=re.escape("has 5 bytes left after the 0 elements of shape [0]")):
        deserialize_bytes(frame(b"a"), (0,))
