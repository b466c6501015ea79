"""The KServe system shared-memory extension, sans-I/O: register bodies and per-tensor region references.

Triton's wire behaviour, so ``tritonclient`` and ``perf_analyzer`` work unchanged:

- register body ``{"key": "/shm_key", "offset": N, "byte_size": N}`` (`parse_register`);
- an input or output carrying ``shared_memory_region``, ``shared_memory_byte_size`` and optional
  ``shared_memory_offset`` parameters refers to a window of a registered region (`reference_of`);
- `check_window` proves a window lies inside the registered region, so nothing reads or writes outside it.

Every client mistake raises `InvalidInputError` naming the tensor and the region.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInputError

__all__ = ["RegionSpec", "TensorReference", "check_window", "parse_register", "reference_of"]

REGION = "shared_memory_region"
BYTE_SIZE = "shared_memory_byte_size"
OFFSET = "shared_memory_offset"


@dataclass(frozen=True)
class RegionSpec:
    """A registered region: ``byte_size`` bytes of the segment ``key`` from ``offset`` on."""

    name: str
    key: str
    offset: int
    byte_size: int


@dataclass(frozen=True)
class TensorReference:
    """A tensor's window in a registered region: ``byte_size`` bytes from ``offset`` (relative to the region)."""

    region: str
    offset: int
    byte_size: int


def _non_negative_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError(f"{what} must be a non-negative integer, got {value!r}")
    return value


def parse_register(name: str, body: Mapping[str, Any]) -> RegionSpec:
    """Validate a register request for region ``name``.

    >>> parse_register("r", {"key": "/k", "byte_size": 64})
    RegionSpec(name='r', key='/k', offset=0, byte_size=64)
    """
    if not name:
        raise InvalidInputError("shared memory region name must not be empty")
    key = body.get("key")
    if not isinstance(key, str) or not key:
        raise InvalidInputError(f"register of shared memory region '{name}': 'key' must be a non-empty string")
    offset = _non_negative_int(body.get("offset", 0), f"'offset' of shared memory region '{name}'")
    byte_size = _non_negative_int(body.get("byte_size"), f"'byte_size' of shared memory region '{name}'")
    if byte_size == 0:
        raise InvalidInputError(f"'byte_size' of shared memory region '{name}' must be positive")
    return RegionSpec(name, key, offset, byte_size)


def reference_of(kind: str, tensor: str, parameters: Mapping[str, Any]) -> TensorReference | None:
    """The region window an input/output names in its parameters, or None if it has no shm parameters.

    >>> reference_of("input", "x", {"shared_memory_region": "r", "shared_memory_byte_size": 8})
    TensorReference(region='r', offset=0, byte_size=8)
    >>> reference_of("input", "x", {}) is None
    True
    """
    region = parameters.get(REGION)
    if region is None:
        if BYTE_SIZE in parameters or OFFSET in parameters:
            raise InvalidInputError(f"{kind} '{tensor}': '{BYTE_SIZE}'/'{OFFSET}' given without '{REGION}'")
        return None
    if not isinstance(region, str) or not region:
        raise InvalidInputError(f"{kind} '{tensor}': '{REGION}' must be a non-empty string, got {region!r}")
    if BYTE_SIZE not in parameters:
        raise InvalidInputError(f"{kind} '{tensor}': '{BYTE_SIZE}' is required with '{REGION}' '{region}'")
    where = f"{kind} '{tensor}' in shared memory region '{region}'"
    byte_size = _non_negative_int(parameters[BYTE_SIZE], f"'{BYTE_SIZE}' of {where}")
    offset = _non_negative_int(parameters.get(OFFSET, 0), f"'{OFFSET}' of {where}")
    return TensorReference(region, offset, byte_size)


def check_window(kind: str, tensor: str, reference: TensorReference, region: RegionSpec) -> None:
    """Raise unless ``reference`` lies wholly inside ``region`` (offsets relative to the region's start).

    >>> check_window("input", "x", TensorReference("r", 8, 8), RegionSpec("r", "/k", 0, 16))
    >>> check_window("input", "x", TensorReference("r", 8, 9), RegionSpec("r", "/k", 0, 16))
    Traceback (most recent call last):
    ...
    pybind_serve.errors.InvalidInputError: input 'x': offset 8 + byte size 9 exceeds ... region 'r' of 16 bytes
    """
    if reference.offset + reference.byte_size > region.byte_size:
        raise InvalidInputError(
            f"{kind} '{tensor}': offset {reference.offset} + byte size {reference.byte_size} exceeds "
            f"shared memory region '{region.name}' of {region.byte_size} bytes"
        )
