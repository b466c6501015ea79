"""The system shared-memory extension's parsing (protocol/shared_memory.py) and region registry (front/regions.py)."""

from __future__ import annotations

import doctest
import os
import uuid
from collections.abc import Iterator

import pytest

from pybind_serve.errors import InvalidInputError
from pybind_serve.front import regions as regions_module
from pybind_serve.front.regions import Regions
from pybind_serve.protocol import shared_memory
from pybind_serve.protocol.shared_memory import (
    RegionSpec,
    TensorReference,
    check_window,
    parse_register,
    reference_of,
)


@pytest.fixture
def segment() -> Iterator[str]:
    """A 256-byte client segment (a key as tritonclient passes it), unlinked by the test, not the registry."""
    key = f"/test_shm_{uuid.uuid4().hex}"
    fd = os.open(f"/dev/shm{key}", os.O_CREAT | os.O_RDWR, 0o600)
    os.ftruncate(fd, 256)
    os.close(fd)
    yield key
    os.unlink(f"/dev/shm{key}")


@pytest.fixture
def regions() -> Iterator[Regions]:
    registry = Regions()
    yield registry
    registry.close()


@pytest.mark.parametrize("module", [shared_memory, regions_module])
def test_doctests_pass(module: object) -> None:
    assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0  # type: ignore[arg-type]


def test_parse_register_reads_triton_body() -> None:
    assert parse_register("r", {"key": "/k", "offset": 4, "byte_size": 8}) == RegionSpec("r", "/k", 4, 8)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"byte_size": 8}, "'key' must be a non-empty string"),
        ({"key": "/k"}, "'byte_size'"),
        ({"key": "/k", "byte_size": 0}, "must be positive"),
        ({"key": "/k", "byte_size": 8, "offset": -1}, "'offset'"),
        ({"key": "/k", "byte_size": "8"}, "non-negative integer"),
        ({"key": "/k", "byte_size": True}, "non-negative integer"),
    ],
)
def test_parse_register_refuses_bad_bodies(body: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_register("r", body)


def test_reference_of_reads_parameters() -> None:
    params = {"shared_memory_region": "r", "shared_memory_byte_size": 16, "shared_memory_offset": 8}
    assert reference_of("input", "x", params) == TensorReference("r", 8, 16)
    assert reference_of("input", "x", {"binary_data": True}) is None


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"shared_memory_byte_size": 4}, "without 'shared_memory_region'"),
        ({"shared_memory_region": "r"}, "'shared_memory_byte_size' is required"),
        ({"shared_memory_region": "", "shared_memory_byte_size": 4}, "non-empty string"),
        ({"shared_memory_region": "r", "shared_memory_byte_size": -4}, "non-negative"),
        ({"shared_memory_region": "r", "shared_memory_byte_size": 4, "shared_memory_offset": "0"}, "non-negative"),
    ],
)
def test_reference_of_names_tensor_in_errors(params: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message) as raised:
        reference_of("input", "x", params)
    assert "'x'" in str(raised.value)


def test_check_window_allows_exact_fit_and_refuses_overrun() -> None:
    region = RegionSpec("r", "/k", 0, 16)
    check_window("output", "y", TensorReference("r", 0, 16), region)
    with pytest.raises(InvalidInputError, match=r"output 'y'.*region 'r' of 16 bytes"):
        check_window("output", "y", TensorReference("r", 16, 1), region)


def test_register_view_round_trip_respects_region_offset(regions: Regions, segment: str) -> None:
    regions.register(RegionSpec("r", segment, 64, 32))
    regions.view("input", "x", TensorReference("r", 0, 4))[:] = b"wxyz"
    with open(f"/dev/shm{segment}", "rb") as file:
        assert file.read()[64:68] == b"wxyz"
    assert regions.status() == [RegionSpec("r", segment, 64, 32)]
    assert regions.status("r") == [RegionSpec("r", segment, 64, 32)]


def test_view_never_reaches_outside_the_window(regions: Regions, segment: str) -> None:
    regions.register(RegionSpec("r", segment, 64, 32))
    with pytest.raises(InvalidInputError, match="exceeds shared memory region 'r' of 32 bytes"):
        regions.view("input", "x", TensorReference("r", 16, 32))
    assert len(regions.view("input", "x", TensorReference("r", 0, 32))) == 32


def test_register_refuses_missing_key_duplicate_and_oversize(regions: Regions, segment: str) -> None:
    with pytest.raises(InvalidInputError, match="Unable to open shared memory region 'r'"):
        regions.register(RegionSpec("r", "/no_such_key_for_pybind_serve", 0, 8))
    with pytest.raises(InvalidInputError, match="exceeds the 256 bytes"):
        regions.register(RegionSpec("r", segment, 200, 64))
    with pytest.raises(InvalidInputError, match="invalid key"):
        regions.register(RegionSpec("r", "/../etc/passwd", 0, 8))
    regions.register(RegionSpec("r", segment, 0, 8))
    with pytest.raises(InvalidInputError, match="already in manager"):
        regions.register(RegionSpec("r", segment, 0, 8))


def test_unknown_region_and_unregister(regions: Regions, segment: str) -> None:
    with pytest.raises(InvalidInputError, match=r"input 'x': unable to find .* region 'nope'"):
        regions.view("input", "x", TensorReference("nope", 0, 1))
    with pytest.raises(InvalidInputError, match="Unable to find"):
        regions.status("nope")
    regions.register(RegionSpec("a", segment, 0, 8))
    regions.register(RegionSpec("b", segment, 8, 8))
    regions.unregister("a")
    assert [spec.name for spec in regions.status()] == ["b"]
    regions.unregister()
    assert regions.status() == []
    assert os.path.exists(f"/dev/shm{segment}")  # the client's segment is never unlinked
