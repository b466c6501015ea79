"""The clients' system shared-memory transport (``shared_memory=True``), for a server on the same host.

A client keeps a small pool of /dev/shm regions, each registered with the server once and used by one call at
a time. A call writes its inputs into its region and asks for its outputs there, and the request carries only
names, shapes and windows. The client unlinks a region's /dev/shm name as soon as the server has mapped it
(both keep their mappings), so a client that dies, however it dies, leaves no segment behind; `close`
unregisters the regions and unmaps them.

>>> pool = RegionPool()
>>> region, new = pool.take(100)
>>> new, region.size >= 100, region.key.startswith("/pbs_client_")
(True, True, True)
>>> placement = Placement.of(region, serialized({"x": np.arange(3, dtype=np.float32)}), {"y": 12})
>>> placement.inputs["x"], placement.outputs["y"]
(Window(offset=0, nbytes=12), Window(offset=64, nbytes=12))
>>> pool.give(region); pool.close()
"""

from __future__ import annotations

import contextlib
import itertools
import math
import mmap
import os
import secrets
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..dtypes import from_datatype
from ..protocol.shared_memory import window_parameters
from ..protocol.tensor_codec import array_from_buffer, array_to_buffer
from .inputs import datatype_of
from .model import ModelMetadata

__all__ = ["ClientRegion", "Placement", "RegionPool", "Window", "output_sizes", "serialized"]

SHM_DIR = "/dev/shm"  # the client layer does not import the server's transport
_ALIGN = 64
_MIN_REGION = 64 << 10
_counter = itertools.count()


def _aligned(size: int) -> int:
    return (size + _ALIGN - 1) // _ALIGN * _ALIGN


class ClientRegion:
    """One /dev/shm segment of the client, mapped: ``name`` is the region's name on the server too."""

    def __init__(self, size: int) -> None:
        self.name = f"pbs_client_{os.getpid()}_{secrets.token_hex(4)}_{next(_counter)}"
        self.key = f"/{self.name}"
        self.size = size
        self.registered = False
        path = os.path.join(SHM_DIR, self.name)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            os.ftruncate(fd, size)
            self._map = mmap.mmap(fd, size)
        except BaseException:
            os.unlink(path)
            raise
        finally:
            os.close(fd)
        self._linked = True

    def view(self, window: Window) -> memoryview:
        return memoryview(self._map)[window.offset : window.offset + window.nbytes]

    def unlink(self) -> None:
        """Remove the /dev/shm name (once the server mapped it): the memory lives on in both mappings."""
        if self._linked:
            self._linked = False
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(SHM_DIR, self.name))

    def close(self) -> None:
        self.unlink()
        with contextlib.suppress(BufferError):  # an output still viewed: unmapped when the view goes
            self._map.close()


@dataclass(frozen=True)
class Window:
    """A tensor's bytes in a region."""

    offset: int
    nbytes: int


@dataclass(frozen=True)
class Placement:
    """Where one call's tensors sit in its region: the inputs (written) and the outputs (read after the call)."""

    region: ClientRegion
    inputs: Mapping[str, Window]
    outputs: Mapping[str, Window]

    @classmethod
    def of(
        cls, region: ClientRegion, inputs: Mapping[str, bytes | memoryview], outputs: Mapping[str, int]
    ) -> Placement:
        """Write the ``inputs`` (name -> serialized tensor) into ``region`` and reserve room for ``outputs``
        (name -> byte size) after them."""
        offset, placed_inputs, placed_outputs = 0, {}, {}
        for name, buffer in inputs.items():
            window = Window(offset, len(buffer))
            region.view(window)[:] = buffer
            placed_inputs[name] = window
            offset += _aligned(window.nbytes)
        for name, nbytes in outputs.items():
            placed_outputs[name] = Window(offset, nbytes)
            offset += _aligned(nbytes)
        return cls(region, placed_inputs, placed_outputs)

    @staticmethod
    def size_of(inputs: Mapping[str, bytes | memoryview], outputs: Mapping[str, int]) -> int:
        """The region size `of` needs for these inputs and outputs."""
        return sum(_aligned(size) for size in [*map(len, inputs.values()), *outputs.values()])

    def read_output(self, name: str, datatype: str, shape: Sequence[int]) -> np.ndarray:
        """Output ``name`` copied out of the region (which the next call reuses)."""
        window = self.outputs[name]
        return array_from_buffer(self.region.view(window), datatype, shape).copy()

    def parameters(self, window: Window) -> dict[str, Any]:
        """The tensor parameters that point the server at ``window`` of this region."""
        return window_parameters(self.region.name, window.offset, window.nbytes)


def serialized(inputs: Mapping[str, np.ndarray]) -> dict[str, bytes | memoryview]:
    """Each input's bytes as they go into a region (BYTES: length-prefixed elements)."""
    return {name: array_to_buffer(array, datatype_of(name, array)) for name, array in inputs.items()}


def output_sizes(metadata: ModelMetadata, wanted: Sequence[str] | None, rows: int | None) -> dict[str, int]:
    """The byte size of each wanted output whose size the metadata fixes (the batch dim is ``rows`` when the
    model batches, else None); outputs of unknown size (BYTES, variable dims) come back in the response."""
    sizes = {}
    names = set(wanted) if wanted is not None else None
    for tensor in metadata.outputs:
        if names is not None and tensor.name not in names:
            continue
        shape = list(tensor.shape)
        if rows is not None and shape[:1] == [-1]:
            shape[0] = rows
        if tensor.datatype == "BYTES" or any(dim < 0 for dim in shape):
            continue
        sizes[tensor.name] = math.prod(shape) * np.dtype(from_datatype(tensor.datatype)).itemsize
    return sizes


class RegionPool:
    """The client's regions: each call takes one (at least its size) and gives it back; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._free: list[ClientRegion] = []
        self._all: list[ClientRegion] = []
        self._closed = False

    def take(self, size: int) -> tuple[ClientRegion, bool]:
        """A free region of at least ``size`` bytes, and whether it is new (then it must be registered)."""
        with self._lock:
            fitting = [region for region in self._free if region.size >= size]
            if fitting:
                region = min(fitting, key=lambda r: r.size)
                self._free.remove(region)
                return region, False
        region = ClientRegion(max(_MIN_REGION, 1 << max(size - 1, 1).bit_length()))
        with self._lock:
            self._all.append(region)
        return region, True

    def give(self, region: ClientRegion) -> None:
        with self._lock:
            if region.registered and not self._closed:
                self._free.append(region)
                return
        self._drop(region)

    def registered(self) -> list[ClientRegion]:
        with self._lock:
            return [region for region in self._all if region.registered]

    def close(self) -> None:
        """Unmap every region (unregistering them with the server is the caller's, before this)."""
        with self._lock:
            self._closed = True
            regions, self._all, self._free = self._all, [], []
        for region in regions:
            region.close()

    def _drop(self, region: ClientRegion) -> None:
        with self._lock:
            if region in self._all:
                self._all.remove(region)
        region.close()
