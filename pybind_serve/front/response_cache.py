"""The front's response cache (Triton's ``response_cache``): the outputs of successful responses, by request.

A model bound with ``ModelConfig(response_cache=True)`` has its requests looked up here before they are queued
(`inference`): a request identical to an earlier one gets that one's outputs, encoded for it (its own id, the
outputs it asks for, binary or JSON, shared memory), without running the function. Identical means the same
model name and version, the same inputs (names, datatypes, shapes and bytes) and the same custom parameters;
``priority``, ``timeout`` and the protocol's own parameters (``binary_data_output``, ``triton_*``...) are
already out of `InferRequest.parameters` and do not count. The key is a BLAKE2b digest of all that.

Every output the function returned is stored (copied out of the worker's shared memory once the response has
been encoded), whichever ones the request asked for. Inputs in shared memory are hashed from the region when
the request arrives: the client must leave them unchanged until its response, which the protocol asks anyway.

Memory is bounded by ``capacity_bytes`` (`Serve(response_cache_bytes=...)`), counting the outputs' bytes and
the key; the least recently used entries are evicted first, and a response bigger than the whole cache is not
stored. Each front process keeps its own cache. Binding or unbinding a model version drops its entries.

>>> import numpy as np
>>> cache = ResponseCache(1 << 20)
>>> request = InferRequest("m", 1, {"x": np.arange(3, dtype=np.float32)})
>>> key = request_key(request)
>>> cache.get(key) is None, cache.put(key, ("m", 1), {"y": np.ones(3)}), cache.get(key)["y"].tolist()
(True, True, [1.0, 1.0, 1.0])
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from ..dtypes import serialize_bytes
from ..metrics import ModelStats
from ..protocol.messages import InferRequest

__all__ = ["ResponseCache", "request_key"]

T = TypeVar("T")
_LENGTH = struct.Struct("<Q")
_ENTRY_OVERHEAD = 256  # bytes an entry costs beyond its arrays and key (dict slots, the arrays' headers)


def request_key(request: InferRequest) -> bytes:
    """The cache key of a request: a BLAKE2b digest of its model, version, inputs and custom parameters."""
    digest = hashlib.blake2b(digest_size=32)

    def add(data: Any, size: int | None = None) -> None:  # length-prefixed: different parts never hash the same
        digest.update(_LENGTH.pack(len(data) if size is None else size))
        digest.update(data)

    add(request.model.encode())
    add(str(request.version).encode())
    for name, array in sorted(request.inputs.items()):
        add(name.encode())
        add(array.dtype.str.encode())
        add(repr(array.shape).encode())
        if array.dtype.kind == "O":
            add(serialize_bytes(array))
        else:
            add(np.ascontiguousarray(array), array.nbytes)  # the array's buffer, no copy of a contiguous one
    add(json.dumps(request.parameters, sort_keys=True, default=repr).encode())
    return digest.digest()


@dataclass(eq=False, slots=True)
class _Entry:
    model: tuple[str, int]
    outputs: dict[str, np.ndarray]
    size: int


class ResponseCache:
    """The outputs of cached responses by `request_key`, least recently used first, within ``capacity_bytes``."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self.size_bytes = 0
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> dict[str, np.ndarray] | None:
        """The outputs stored under ``key`` (now the most recently used), or None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry.outputs

    def put(self, key: bytes, model: tuple[str, int], outputs: dict[str, np.ndarray]) -> bool:
        """Store copies of ``outputs`` (they may be views into memory about to be reused) under ``key``, evicting
        the least recently used entries to make room; False if they are bigger than the whole cache."""
        size = len(key) + _ENTRY_OVERHEAD + sum(_nbytes(array) for array in outputs.values())
        if size > self.capacity_bytes:
            return False
        old = self._entries.pop(key, None)
        if old is not None:
            self.size_bytes -= old.size
        while self.size_bytes + size > self.capacity_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.size_bytes -= evicted.size
        self._entries[key] = _Entry(model, {name: _frozen_copy(array) for name, array in outputs.items()}, size)
        self.size_bytes += size
        return True

    def drop_model(self, model: tuple[str, int]) -> int:
        """Forget the entries of a model version (it was bound again, or unbound); how many there were."""
        keys = [key for key, entry in self._entries.items() if entry.model == model]
        for key in keys:
            self.size_bytes -= self._entries.pop(key).size
        return len(keys)

    def lookup(
        self, request: InferRequest, respond: Callable[[dict[str, np.ndarray]], T], stats: ModelStats
    ) -> tuple[dict[str, np.ndarray] | None, Callable[[dict[str, np.ndarray]], T]]:
        """Look ``request`` up. A hit: ``(outputs, respond)``, the stored outputs to answer with. A miss:
        ``(None, storing)``, ``respond`` wrapped to store the outputs once it has encoded them, to queue with the
        request. Counts the hit or the miss, and the time taken (hashing, looking up, inserting), in ``stats``."""
        started = time.monotonic()
        key = request_key(request)
        outputs = self.get(key)
        if outputs is not None:
            stats.cache_hits += 1
            stats.cache_hit_us += int((time.monotonic() - started) * 1e6)
            stats.last_inference_ms = int(time.time() * 1000)  # as Triton: a hit is an inference too
            return outputs, respond
        stats.cache_misses += 1
        stats.cache_miss_us += int((time.monotonic() - started) * 1e6)
        model = (request.model, request.version)

        def storing(outputs: dict[str, np.ndarray]) -> T:
            response = respond(outputs)  # first: only a response that encoded is stored
            inserting = time.monotonic()
            self.put(key, model, outputs)
            stats.cache_miss_us += int((time.monotonic() - inserting) * 1e6)
            return response

        return None, storing


def _nbytes(array: np.ndarray) -> int:
    if array.dtype.kind == "O":
        return int(array.size) * 8 + sum(len(item) if isinstance(item, (bytes, str)) else 64 for item in array.flat)
    return int(array.nbytes)


def _frozen_copy(array: Any) -> np.ndarray:
    copy = np.array(array, copy=True)
    copy.flags.writeable = False
    return copy
