"""The front's registry of client shared-memory regions (KServe system shared-memory extension).

A registered region maps ``byte_size`` bytes of the client's POSIX segment ``key`` from ``offset`` on. Tensors
are only ever reached through `Regions.view`, which checks the window against the registered size, so a
request can never read or write outside what the client registered. The client owns its segments: we map
and unmap them, and never unlink one.

>>> import os
>>> fd = os.open("/dev/shm/regions_doc", os.O_CREAT | os.O_RDWR, 0o600); os.ftruncate(fd, 64); os.close(fd)
>>> regions = Regions()
>>> regions.register(RegionSpec("r", "/regions_doc", 0, 64))
>>> regions.view("input", "x", TensorReference("r", 8, 4))[:] = b"abcd"
>>> bytes(regions.view("output", "y", TensorReference("r", 8, 4)))
b'abcd'
>>> regions.close(); os.unlink("/dev/shm/regions_doc")
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from ..errors import InvalidInputError, UnsupportedError
from ..protocol.shared_memory import NOT_ENABLED, RegionSpec, TensorReference, check_window
from ..transport.shm import PREFIX, SHM_DIR

__all__ = ["NO_CUDA", "Regions", "enabled"]

NO_CUDA = (
    "CUDA shared memory is not supported: register system shared memory (/dev/shm) instead, "
    "or send the tensors in the request"
)


def enabled(regions: Regions | None) -> Regions:
    """The registry, or `UnsupportedError` when the extension is off (``Serve(system_shared_memory=False)``)."""
    if regions is None:
        raise UnsupportedError(NOT_ENABLED)
    return regions


@dataclass
class _Mapped:
    spec: RegionSpec
    mapping: mmap.mmap
    window: memoryview  # the registered bytes only: views are sliced from here, never from the whole mapping


def _map(spec: RegionSpec) -> _Mapped:
    name = spec.key.lstrip("/")
    if not name or "/" in name:
        raise InvalidInputError(f"Unable to open shared memory region '{spec.name}': invalid key '{spec.key}'")
    if name.startswith(PREFIX):  # the server's own arenas: other requests' tensors
        raise InvalidInputError(
            f"Unable to open shared memory region '{spec.name}': key '{spec.key}' belongs to pybind_serve itself"
        )
    try:
        fd = os.open(os.path.join(SHM_DIR, name), os.O_RDWR)
    except OSError as error:
        raise InvalidInputError(
            f"Unable to open shared memory region '{spec.name}': key '{spec.key}' ({error.strerror})"
        ) from None
    try:
        size = os.fstat(fd).st_size
        if spec.offset + spec.byte_size > size:
            raise InvalidInputError(
                f"shared memory region '{spec.name}': offset {spec.offset} + byte_size {spec.byte_size} "
                f"exceeds the {size} bytes of key '{spec.key}'"
            )
        mapping = mmap.mmap(fd, size)
    finally:
        os.close(fd)
    window = memoryview(mapping)[spec.offset : spec.offset + spec.byte_size]
    return _Mapped(spec, mapping, window)


class Regions:
    """Registered regions by name: `register`, `unregister`, `status`, `view`; `close` unmaps them all.

    With several front processes, the endpoints call `register_everywhere` and `unregister_everywhere`, which
    also ``share`` the change with the other fronts (their `register` / `unregister`) before answering.
    """

    def __init__(self) -> None:
        self._regions: dict[str, _Mapped] = {}
        # Applies a change on the other fronts: ("register", spec fields) or ("unregister", {"name": ...});
        # answers their errors.
        self.share: Callable[[str, dict[str, Any]], Awaitable[list[str]]] | None = None

    async def register_everywhere(self, spec: RegionSpec) -> None:
        """`register` here and on every other front; if one of them refuses, nowhere."""
        self.register(spec)
        if self.share is None:
            return
        errors = await self.share("register", asdict(spec))
        if errors:
            self.unregister(spec.name)
            await self.share("unregister", {"name": spec.name})
            raise InvalidInputError(errors[0])

    async def unregister_everywhere(self, name: str = "") -> None:
        self.unregister(name)
        if self.share is not None:
            await self.share("unregister", {"name": name})

    def register(self, spec: RegionSpec) -> None:
        if spec.name in self._regions:
            raise InvalidInputError(f"shared memory region '{spec.name}' already in manager")
        self._regions[spec.name] = _map(spec)

    def unregister(self, name: str = "") -> None:
        """Unregister ``name``, or every region when ``name`` is empty (as Triton does); unknown names are ignored."""
        for region in [name] if name else list(self._regions):
            mapped = self._regions.pop(region, None)
            if mapped is not None:
                _release(mapped)

    def status(self, name: str = "") -> list[RegionSpec]:
        if not name:
            return [mapped.spec for mapped in self._regions.values()]
        if name not in self._regions:
            raise InvalidInputError(f"Unable to find system shared memory region: '{name}'")
        return [self._regions[name].spec]

    def view(self, kind: str, tensor: str, reference: TensorReference) -> memoryview:
        """The bytes of ``reference``, checked to lie inside its registered region."""
        mapped = self._regions.get(reference.region)
        if mapped is None:
            raise InvalidInputError(
                f"{kind} '{tensor}': unable to find system shared memory region '{reference.region}'"
            )
        check_window(kind, tensor, reference, mapped.spec)
        return mapped.window[reference.offset : reference.offset + reference.byte_size]

    def close(self) -> None:
        self.unregister()


def _release(mapped: _Mapped) -> None:
    mapped.window.release()
    # a view still exported (an in-flight request) keeps the mapping alive until the last view goes
    with contextlib.suppress(BufferError):
        mapped.mapping.close()
