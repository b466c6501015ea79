"""Tensor bytes carried in the ZeroMQ message itself, for a worker on another host (no shared memory between them).

A descriptor of the shared-memory codec (`frames.write_group`) names a block of an arena; one of this codec names
a *part* of the message that carries it: ``{"part": i, "dtype": ..., "shapes": [...]}`` (``"sizes"`` too for
BYTES), where part ``i`` of the frame's ``buffers`` holds the group's bytes (each request's array, one after the
other, as in a block). The frame's JSON goes first and its buffers follow as further message parts
(`network.to_parts`), sent without a copy by ZeroMQ. Nothing is pickled.

The arrays a worker reads are writable copies (as a function reading shared memory may write into its inputs);
those the front reads are read-only views of the received parts, which it only encodes.

>>> buffers: list = []
>>> desc = pack_group([np.arange(3, dtype=np.float32), np.arange(2, dtype=np.float32)], buffers)
>>> desc["part"], [a.tolist() for a in unpack_group(desc, buffers)]
(0, [[0.0, 1.0, 2.0], [0.0, 1.0]])
>>> strings = pack_group([np.array([b"ab", b""], dtype=object)], buffers)
>>> unpack_group(strings, buffers, writable=True)[0].tolist()
[b'ab', b'']
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..dtypes import deserialize_bytes, serialize_bytes
from .frames import fill, little_endian, read_group
from .shm import SegmentMap

__all__ = ["is_inline", "pack_group", "read_any", "shm_blocks", "unpack_group"]

_OBJECT = "|O"


def pack_group(arrays: list[np.ndarray], buffers: list[Any]) -> dict[str, Any]:
    """Append the bytes of a group of arrays of one dtype (one per request) to ``buffers``; the descriptor.

    One copy at most: a group of one C-contiguous array is sent as it is (ZeroMQ references its memory); items
    that are not numpy arrays but can ``copy_into`` an array (torch tensors) copy themselves into place.
    """
    shapes = [list(a.shape) for a in arrays]
    dtype = arrays[0].dtype
    if dtype.kind in "OSU":
        encoded = [serialize_bytes(a) for a in arrays]
        buffers.append(b"".join(encoded))
        return {"part": len(buffers) - 1, "dtype": _OBJECT, "shapes": shapes, "sizes": [len(e) for e in encoded]}
    dtype = little_endian(dtype)
    first = arrays[0]
    if len(arrays) == 1 and isinstance(first, np.ndarray) and first.flags.c_contiguous and first.dtype == dtype:
        data: Any = first
    else:
        data = np.empty(sum(a.size for a in arrays), dtype=dtype)
        fill(data, arrays)
    buffers.append(memoryview(data).cast("B") if data.size else b"")
    return {"part": len(buffers) - 1, "dtype": dtype.str, "shapes": shapes}


def unpack_group(desc: dict[str, Any], buffers: list[Any], writable: bool = False) -> list[np.ndarray]:
    """The arrays a descriptor of `pack_group` names, from the message's ``buffers``: views of its part, or
    (``writable``) views of one copy of it. BYTES are decoded (which copies)."""
    data = buffers[desc["part"]]
    shapes = [tuple(s) for s in desc["shapes"]]
    if desc["dtype"] == _OBJECT:
        out, start, view = [], 0, memoryview(data)
        for shape, size in zip(shapes, desc["sizes"], strict=True):
            out.append(deserialize_bytes(view[start : start + size], shape))
            start += size
        return out
    dtype = np.dtype(desc["dtype"])
    counts = [math.prod(s) for s in shapes]
    flat = np.frombuffer(bytearray(data) if writable else data, dtype=dtype, count=sum(counts))
    arrays, start = [], 0
    for shape, count in zip(shapes, counts, strict=True):
        arrays.append(flat[start : start + count].reshape(shape))
        start += count
    return arrays


def is_inline(desc: dict[str, Any]) -> bool:
    """Whether a descriptor names a part of its message (not a block of shared memory)."""
    return "part" in desc


def read_any(segments: SegmentMap, desc: dict[str, Any], buffers: list[Any] | None, writable: bool) -> list[np.ndarray]:
    """The arrays a descriptor of either codec names."""
    if "part" in desc:
        return unpack_group(desc, buffers or [], writable)
    return read_group(segments, desc)


def shm_blocks(descriptors: dict[str, dict[str, Any]]) -> list[list[Any]]:
    """The shared-memory blocks of these descriptors, as a ``free`` frame lists them (inline ones have none)."""
    return [list(desc["block"]) for desc in descriptors.values() if "block" in desc]
