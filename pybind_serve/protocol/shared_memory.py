"""The KServe system shared-memory extension, sans-I/O: register bodies and per-tensor region references.

Triton's wire behaviour, so ``tritonclient`` and ``perf_analyzer`` work unchanged:

- register body ``{"key": "/shm_key", "offset": N, "byte_size": N}`` (`parse_register`);
- an input or output carrying ``shared_memory_region``, ``shared_memory_byte_size`` and optional
  ``shared_memory_offset`` parameters refers to a window of a registered region (`reference_of`);
- `check_window` proves a window lies inside the registered region, so nothing reads or writes outside it;
- `shared_window` resolves a tensor's parameters to the bytes of its window through a `RegionLookup` (the
  front's registry), and `SharedOutput` writes an output there.

Every client mistake raises `InvalidInputError` naming the tensor and the region.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import InvalidInputError

__all__ = [
    "NOT_ENABLED",
    "RegionLookup",
    "RegionSpec",
    "SharedOutput",
    "TensorReference",
    "check_window",
    "parse_register",
    "reference_of",
    "shared_window",
    "status_document",
    "window_parameters",
]

REGION = "shared_memory_region"
BYTE_SIZE = "shared_memory_byte_size"
OFFSET = "shared_memory_offset"
NOT_ENABLED = (
    "system shared memory is off on this server: start it with Serve(system_shared_memory=True), "
    "or send the tensors in the request"
)


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


def window_parameters(region: str, offset: int, byte_size: int) -> dict[str, Any]:
    """The tensor parameters that name ``byte_size`` bytes at ``offset`` of ``region`` (no offset when 0).

    >>> window_parameters("r", 0, 8)
    {'shared_memory_region': 'r', 'shared_memory_byte_size': 8}
    """
    parameters: dict[str, Any] = {REGION: region, BYTE_SIZE: byte_size}
    if offset:
        parameters[OFFSET] = offset
    return parameters


def status_document(regions: list[RegionSpec]) -> list[dict[str, Any]]:
    """The REST status answer: one entry per region, as Triton writes them.

    >>> status_document([RegionSpec("r", "/k", 0, 64)])
    [{'name': 'r', 'key': '/k', 'offset': 0, 'byte_size': 64}]
    """
    return [{"name": r.name, "key": r.key, "offset": r.offset, "byte_size": r.byte_size} for r in regions]


class RegionLookup(Protocol):
    """What the codecs need of the front's region registry: the checked bytes of a tensor's window."""

    def view(self, kind: str, tensor: str, reference: TensorReference) -> memoryview: ...


def shared_window(
    kind: str, tensor: str, parameters: Mapping[str, Any], regions: RegionLookup | None
) -> tuple[TensorReference, memoryview] | None:
    """The window an input/output's parameters name and its bytes, or None when it names none.

    ``regions`` None: the extension is off, and a tensor that names a region is refused (`NOT_ENABLED`).
    """
    reference = reference_of(kind, tensor, parameters)
    if reference is None:
        return None
    if regions is None:
        raise InvalidInputError(f"{kind} '{tensor}' names shared memory region '{reference.region}', but {NOT_ENABLED}")
    return reference, regions.view(kind, tensor, reference)


@dataclass(frozen=True, eq=False)
class SharedOutput:
    """An output the client asked to have written into its region, and the bytes of that window.

    >>> out = SharedOutput(TensorReference("r", 0, 8), memoryview(bytearray(8)))
    >>> out.write("y", b"abcd")
    {'shared_memory_region': 'r', 'shared_memory_byte_size': 4}
    >>> bytes(out.window)
    b'abcd\\x00\\x00\\x00\\x00'
    """

    reference: TensorReference
    window: memoryview = field(repr=False)

    def write(self, tensor: str, data: bytes | memoryview) -> dict[str, Any]:
        """Copy an output's bytes into the window; the parameters that describe it in the response.

        Raises `InvalidInputError` when the window is too small (the model's answer is known only now).
        """
        size = len(data)  # bytes, or a uint8 memoryview: its length is its byte size
        if size > self.reference.byte_size:
            raise InvalidInputError(
                f"output '{tensor}': shared memory size specified with the request ({self.reference.byte_size} "
                f"bytes) should be at least {size} bytes to hold the results"
            )
        self.window[:size] = data
        return window_parameters(self.reference.region, self.reference.offset, size)
