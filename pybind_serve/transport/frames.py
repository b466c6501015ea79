"""Descriptor frames between the front and the workers, and the tensor codec over shared memory.

A frame is one small JSON object with an ``op``; tensors inside it are *descriptors*: where a group of
arrays (one per request of a batch) lies in shared memory. ``write_group`` puts arrays into an `Arena` and
returns a descriptor, ``read_group`` turns a descriptor back into numpy views (BYTES tensors are decoded,
which copies). Frames::

    worker -> front   {"op": "hello", "model": name, "version": v}
    front  -> worker  {"op": "batch", "id": n, "inputs": {name: desc}, "parameters": [{...} per request]}
    worker -> front   {"op": "result", "id": n, "outputs": {name: desc}, "compute_us": t}
    worker -> front   {"op": "error", "id": n, "type": "ModelExecutionError", "message": "...", "traceback": "..."}
    front  -> worker  {"op": "free", "blocks": [[segment, offset, nbytes], ...]}

A batch whose requests are traced also carries ``"trace": [traceparent or None per request]``; its answer
(``result``, ``done`` or ``error``) then has ``"times"``: the worker's `time.monotonic_ns` when it received the
batch, read its inputs, got the function's return and wrote the outputs (on a failure, the last is when it
failed), which the front turns into the requests' spans (``front/trace_export.py``).

A decoupled (streaming) model answers a batch with any number of ``partial`` frames, then ``done`` or ``error``;
``index`` lists the requests (positions in the batch) that the outputs answer, ``ended`` those whose stream is
over; the front sends ``cancel`` when a request's client went away::

    worker -> front   {"op": "partial", "id": n, "index": [0, 2], "ended": [1], "outputs": {name: desc}}
    worker -> front   {"op": "done", "id": n, "compute_us": t}
    front  -> worker  {"op": "cancel", "id": n, "index": i}

>>> import os
>>> arena, peer = Arena(f"{os.getpid()}_doc", "f"), SegmentMap()
>>> desc = write_group(arena, [np.arange(3, dtype=np.float32), np.arange(2, dtype=np.float32)])
>>> [a.tolist() for a in read_group(peer, desc)]
[[0.0, 1.0, 2.0], [0.0, 1.0]]
>>> peer.close(); arena.close()
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from ..dtypes import deserialize_bytes, serialize_bytes
from .shm import Arena, Block, SegmentMap

__all__ = ["block_of", "decode", "encode", "fill", "little_endian", "read_group", "write_group"]

_OBJECT = "|O"
_dumps = json.JSONEncoder(
    separators=(",", ":"), default=lambda o: o.item() if isinstance(o, np.generic) else str(o)
).encode


def encode(frame: dict[str, Any]) -> bytes:
    return _dumps(frame).encode()


def decode(data: bytes) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(data)
    return frame


def little_endian(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """The dtype tensors travel as: a big-endian one as its little-endian twin (KServe v2's byte order)."""
    return dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype


def fill(flat: np.ndarray, arrays: list[Any]) -> None:
    """Copy ``arrays`` one after the other into the 1-D ``flat``; an item with ``copy_into(out)`` (a tensor on a
    GPU) copies itself into its place."""
    start = 0
    for array in arrays:
        end = start + array.size
        place = flat[start:end].reshape(array.shape)
        copy_into = getattr(array, "copy_into", None)
        if copy_into is None:
            place[...] = array
        else:
            copy_into(place)
        start = end


def write_group(arena: Arena, arrays: list[np.ndarray]) -> dict[str, Any]:
    """Copy arrays of one dtype (one per request) into one block; return the descriptor. An item that is not a
    numpy array but has ``shape``, ``dtype``, ``size`` and ``copy_into(out)`` (a tensor on a GPU) copies itself
    into its place."""
    dtype = arrays[0].dtype
    if dtype.kind in "OSU":
        return _write_bytes(arena, arrays)
    dtype = little_endian(dtype)
    total = sum(a.size for a in arrays) * dtype.itemsize
    block = arena.allocate(total)
    fill(np.frombuffer(arena.view(block), dtype=dtype, count=total // dtype.itemsize), arrays)
    shapes = [list(a.shape) for a in arrays]
    return {"block": [block.segment, block.offset, block.nbytes], "dtype": dtype.str, "shapes": shapes}


def _write_bytes(arena: Arena, arrays: list[np.ndarray]) -> dict[str, Any]:
    encoded = [serialize_bytes(a) for a in arrays]
    block = arena.allocate(sum(len(e) for e in encoded))
    view, start = arena.view(block), 0
    for data in encoded:
        view[start : start + len(data)] = data
        start += len(data)
    shapes = [list(a.shape) for a in arrays]
    sizes = [len(e) for e in encoded]
    return {"block": [block.segment, block.offset, block.nbytes], "dtype": _OBJECT, "shapes": shapes, "sizes": sizes}


def read_group(segments: SegmentMap, desc: dict[str, Any]) -> list[np.ndarray]:
    """The arrays a descriptor names: views into shared memory (BYTES decoded into object arrays)."""
    segment, offset, nbytes = desc["block"]
    view = segments.view(segment, offset, nbytes)
    shapes = [tuple(s) for s in desc["shapes"]]
    if desc["dtype"] == _OBJECT:
        out, start = [], 0
        for shape, size in zip(shapes, desc["sizes"], strict=True):
            out.append(deserialize_bytes(view[start : start + size], shape))
            start += size
        return out
    dtype = np.dtype(desc["dtype"])
    counts = [math.prod(s) for s in shapes]  # not np.prod: ~1 µs each on small tuples, per request
    flat = np.frombuffer(view, dtype=dtype, count=sum(counts))
    arrays, start = [], 0
    for shape, count in zip(shapes, counts, strict=True):
        arrays.append(flat[start : start + count].reshape(shape))
        start += count
    return arrays


def block_of(desc: dict[str, Any]) -> Block:
    segment, offset, nbytes = desc["block"]
    return Block(segment, offset, nbytes)
