"""`Tensor`: validation of name, dtype, shape and optional; the derived datatype names; `accepts`."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np
import pytest

from pybind_serve.errors import ConfigurationError
from pybind_serve.tensor import Tensor


def problems_of(**kwargs: Any) -> list[str]:
    with pytest.raises(ConfigurationError) as info:
        Tensor(**kwargs)
    return info.value.problems


def test_defaults() -> None:
    t = Tensor("x", np.float32)
    assert (t.name, t.dtype, t.shape, t.optional) == ("x", np.dtype(np.float32), (-1,), False)


@pytest.mark.parametrize("name", ["", None, 3, b"x"])
def test_name_must_be_a_non_empty_string(name: Any) -> None:
    with pytest.raises(ConfigurationError, match="name must be a non-empty string, got " + re.escape(repr(name))):
        Tensor(name, np.float32)


@pytest.mark.parametrize("spelling", [bytes, object, str, np.bytes_, np.str_, "S5", "U3", "O"])
def test_bytes_spellings_become_an_object_dtype(spelling: Any) -> None:
    t = Tensor("text", spelling)
    assert t.dtype == np.dtype(object)
    assert (t.datatype, t.config_type) == ("BYTES", "TYPE_STRING")


@pytest.mark.parametrize(
    ("spelling", "expected", "datatype"),
    [
        (">f4", np.float32, "FP32"),
        (">i8", np.int64, "INT64"),
        (">u2", np.uint16, "UINT16"),
        (">f2", np.float16, "FP16"),
    ],
)
def test_big_endian_dtypes_are_normalised_to_little_endian(spelling: str, expected: type, datatype: str) -> None:
    t = Tensor("x", np.dtype(spelling))
    assert t.dtype == np.dtype(expected)
    assert t.dtype.byteorder in "=<"
    assert t.datatype == datatype


@pytest.mark.parametrize(
    ("dtype", "datatype", "config_type"),
    [
        (np.bool_, "BOOL", "TYPE_BOOL"),
        (np.uint8, "UINT8", "TYPE_UINT8"),
        (np.int64, "INT64", "TYPE_INT64"),
        (np.float16, "FP16", "TYPE_FP16"),
        ("float32", "FP32", "TYPE_FP32"),
        (float, "FP64", "TYPE_FP64"),
        (bytes, "BYTES", "TYPE_STRING"),
    ],
)
def test_datatype_and_config_type(dtype: Any, datatype: str, config_type: str) -> None:
    t = Tensor("x", dtype)
    assert (t.datatype, t.config_type) == (datatype, config_type)


@pytest.mark.parametrize("dtype", [np.complex64, "complex128", "datetime64[ns]", np.dtype([("a", "i4")])])
def test_unsupported_dtype_is_rejected_listing_the_supported_ones(dtype: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"has no KServe datatype; supported: BOOL, BYTES, FP16") as info:
        Tensor("x", dtype)
    assert len(info.value.problems) == 1


def test_non_dtype_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match=r"dtype 'not-a-type' is not a numpy dtype"):
        Tensor("x", "not-a-type")


@pytest.mark.parametrize(("spelling", "same_as"), [("BYTES", bytes), ("FP32", np.float32), ("BOOL", np.bool_)])
def test_a_kserve_datatype_name_is_a_dtype(spelling: str, same_as: Any) -> None:
    assert Tensor("x", spelling, (1,)) == Tensor("x", same_as, (1,))


def test_missing_dtype_is_rejected_not_taken_as_fp64() -> None:
    with pytest.raises(ConfigurationError, match=re.escape("dtype is required (e.g. np.float32, or bytes for BYTES)")):
        Tensor("x", None)


@pytest.mark.parametrize(("shape", "expected"), [(3, (3,)), (np.int64(4), (4,)), (-1, (-1,))])
def test_an_int_shape_becomes_a_tuple(shape: Any, expected: tuple[int, ...]) -> None:
    t = Tensor("x", np.float32, shape)
    assert t.shape == expected
    assert type(t.shape[0]) is int


@pytest.mark.parametrize(
    ("shape", "expected"),
    [([2, 3], (2, 3)), ((), ()), ((-1, 224, 224, 3), (-1, 224, 224, 3)), ((np.int32(2), np.int64(-1)), (2, -1))],
)
def test_sequence_shapes_become_tuples_of_python_ints(shape: Any, expected: tuple[int, ...]) -> None:
    t = Tensor("x", np.float32, shape)
    assert t.shape == expected
    assert all(type(d) is int for d in t.shape)


@pytest.mark.parametrize("dim", [0, -2, True, False, 1.0, 2.5, "3", None, np.bool_(True)])
def test_bad_dims_are_rejected(dim: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"shape dims must be positive ints or -1 \(any size\), got \[4, "):
        Tensor("x", np.float32, (4, dim))


@pytest.mark.parametrize("shape", ["3", b"3", None, 2.0, {3}, (d for d in [3])])
def test_non_sequence_shapes_are_rejected(shape: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"shape must be a sequence of ints, got "):
        Tensor("x", np.float32, shape)


@pytest.mark.parametrize("shape", [True, False, np.bool_(True)])
def test_a_bool_shape_is_rejected_not_taken_as_an_int(shape: Any) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(f"shape must be a sequence of ints, got {shape!r}")):
        Tensor("x", np.float32, shape)


@pytest.mark.parametrize("optional", [1, 0, "yes", None, np.bool_(True)])
def test_optional_must_be_a_bool(optional: Any) -> None:
    with pytest.raises(ConfigurationError, match="optional must be a bool, got " + re.escape(repr(optional))):
        Tensor("x", np.float32, (1,), optional=optional)


def test_optional_true_is_kept() -> None:
    assert Tensor("x", np.float32, optional=True).optional is True


def test_every_problem_is_reported_at_once() -> None:
    problems = problems_of(name="", dtype=np.complex64, shape=(0, 3), optional="no")
    assert len(problems) == 4
    assert problems[0] == "name must be a non-empty string, got ''"
    assert problems[1].startswith("dtype complex64 has no KServe datatype")
    assert problems[2] == "shape dims must be positive ints or -1 (any size), got [0, 3]"
    assert problems[3] == "optional must be a bool, got 'no'"


def test_the_message_names_the_tensor_and_lists_problems_one_per_line() -> None:
    with pytest.raises(ConfigurationError) as info:
        Tensor("img", np.float32, (0,), optional=1)
    assert str(info.value) == (
        "Tensor 'img' is invalid:\n"
        "  - shape dims must be positive ints or -1 (any size), got [0]\n"
        "  - optional must be a bool, got 1"
    )


def test_configuration_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="Tensor 'x' is invalid"):
        Tensor("x", np.float32, 0)


def test_is_frozen() -> None:
    t = Tensor("x", np.float32, (3,))
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.name = "y"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.shape = (4,)  # type: ignore[misc]


def test_equal_specs_compare_and_hash_equal() -> None:
    a, b = Tensor("x", "float32", [3]), Tensor("x", np.dtype(">f4"), 3)
    assert a == b
    assert hash(a) == hash(b)
    assert a != Tensor("x", np.float32, (3,), optional=True)


@pytest.mark.parametrize(
    ("spec", "shape", "fits"),
    [
        ((-1, 3), (5, 3), True),
        ((-1, 3), (1, 3), True),
        ((-1, 3), (5, 4), False),
        ((3,), (3,), True),
        ((3,), (4,), False),
        ((3,), (3, 1), False),
        ((-1,), (), False),
        ((), (), True),
        ((-1, -1), (0, 7), True),
        ((2, -1), [2, 9], True),
    ],
)
def test_accepts(spec: tuple[int, ...], shape: tuple[int, ...], fits: bool) -> None:
    assert Tensor("x", np.float32, spec).accepts(shape) is fits
