"""Model warmup (Triton's ``model_warmup``): requests that every instance of a model runs before it reports ready.

A `Warmup` names a sample: its inputs (each a `WarmupInput`: zeros, random values, or the contents of a file),
its ``batch_size`` and how many times it runs (``count``). Each instance of the model (each worker thread or
process, including one restarted after it died) calls the function with it ``count`` times, as one request of
``batch_size`` rows (``@batch`` sees arrays of shape ``(batch_size, *shape)``; a model that does not batch gets
exactly ``shape``), then says it is ready; the outputs are discarded. A warmup that raises fails ``bind`` /
``run`` with a `StartupError` naming the model, the warmup and the error.

>>> warmup = Warmup("small", batch_size=2, inputs={"x": WarmupInput(np.float32, (3,), zero_data=True)})
>>> warmup.arrays(batching=True, rng=np.random.default_rng(0))["x"].shape
(2, 3)
"""

from __future__ import annotations

import io
import math
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from .dtypes import deserialize_bytes, from_datatype, normalize_dtype, to_config_type, to_datatype
from .errors import ConfigurationError
from .tensor import Tensor

__all__ = ["Warmup", "WarmupInput", "warmup_problems"]

_NPY_MAGIC = b"\x93NUMPY"
_LENGTH = struct.Struct("<I")
_RANDOM_BYTES_MAX = 16  # a random BYTES element has 1 to this many random bytes


def _int_at_least(value: Any, low: int) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and bool(value >= low)


@dataclass(frozen=True)
class WarmupInput:
    """One input of a `Warmup` sample: its ``dtype``, its ``shape`` (without the batch dim), and where its data
    comes from, exactly one of:

    - ``zero_data``: zeros (``False`` for BOOL, empty strings for BYTES);
    - ``random_data``: random values over the dtype's range (ints: all of it; floats: [0, 1); bools; BYTES:
      1 to 16 random bytes per element), new ones for every call;
    - ``input_data_file``: a file holding the tensor's bytes in that dtype, as Triton reads it (C order, little
      endian; BYTES: each element as a 4-byte little-endian length and its bytes), for one sample (repeated
      over the ``batch_size`` rows) or for the whole batch; a NumPy ``.npy`` file (recognised by its header) of
      shape ``shape`` or ``(batch_size, *shape)`` is read too. Its size is checked at ``bind``.

    >>> WarmupInput(np.int64, (4,), random_data=True).datatype
    'INT64'
    """

    dtype: Any
    shape: Sequence[int]
    zero_data: bool = False
    random_data: bool = False
    input_data_file: str | os.PathLike[str] | None = None

    def __post_init__(self) -> None:
        problems: list[str] = []
        try:
            object.__setattr__(self, "dtype", normalize_dtype(self.dtype))
        except ConfigurationError as exc:
            problems.append(str(exc))
        shape = self.shape
        if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
            shape = (int(shape),)
        if (
            isinstance(shape, (str, bytes))
            or not isinstance(shape, Sequence)
            or not all(_int_at_least(d, 0) for d in shape)
        ):
            problems.append(f"shape must be a sequence of ints >= 0 (the batch dim left out), got {self.shape!r}")
        else:
            object.__setattr__(self, "shape", tuple(int(d) for d in shape))
        for name in ("zero_data", "random_data"):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name} must be a bool, got {getattr(self, name)!r}")
        path = self.input_data_file
        if path is not None:
            if isinstance(path, (str, os.PathLike)) and os.fspath(path):
                # absolute: a worker process may run elsewhere than the binding process's working directory
                object.__setattr__(self, "input_data_file", os.path.abspath(os.fspath(path)))
            else:
                problems.append(f"input_data_file must be a path, got {path!r}")
        sources = [self.zero_data is True, self.random_data is True, path is not None]
        if sum(sources) != 1:
            problems.append(
                "give exactly one data source: zero_data=True, random_data=True or input_data_file=<path> "
                f"(got {sum(sources)})"
            )
        if problems:
            raise ConfigurationError.collect("WarmupInput", problems)

    @property
    def datatype(self) -> str:
        """The KServe v2 datatype name, e.g. ``FP32``."""
        return to_datatype(self.dtype)

    @property
    def dims(self) -> tuple[int, ...]:
        """``shape`` as a tuple of ints (as built)."""
        return tuple(self.shape)

    def array(self, rows: int | None, rng: np.random.Generator) -> np.ndarray:
        """The input's data: shape ``(rows, *shape)``, or ``shape`` when ``rows`` is None (a model that does not
        batch). Raises `ConfigurationError` for a data file that does not fit."""
        full = self.dims if rows is None else (rows, *self.dims)
        if self.input_data_file is not None:
            return self._from_file(rows)
        if self.zero_data:
            if self.dtype.kind == "O":
                return np.full(full, b"", dtype=object)
            return np.zeros(full, self.dtype)
        return _random(self.dtype, full, rng)

    def _from_file(self, rows: int | None) -> np.ndarray:
        path = os.fspath(self.input_data_file or "")
        try:
            with open(path, "rb") as file:
                data = file.read()
        except OSError as exc:
            raise ConfigurationError(f"input_data_file {path!r} cannot be read: {exc.strerror or exc}") from None
        if data.startswith(_NPY_MAGIC):
            return self._from_npy(path, data, rows)
        sample = math.prod(self.dims)
        if self.dtype.kind == "O":
            found = _count_bytes_elements(data, path)
            unit = "elements"
        else:
            found, unit = len(data), "bytes"
            sample *= self.dtype.itemsize
        if found == sample:
            array = self._decode(data, self.dims)
            return array if rows is None else np.repeat(array[np.newaxis], rows, axis=0)
        if rows is not None and found == rows * sample:
            return self._decode(data, (rows, *self.dims))
        batch = f" or {rows * sample} (the batch of {rows})" if rows not in (None, 1) else ""
        raise ConfigurationError(
            f"input_data_file {path!r} holds {found} {unit} of {self.datatype}; shape {list(self.dims)} needs "
            f"{sample} (one sample){batch}"
        )

    def _decode(self, data: bytes, shape: tuple[int, ...]) -> np.ndarray:
        if self.dtype.kind == "O":
            return deserialize_bytes(data, shape)
        return np.frombuffer(data, self.dtype).reshape(shape).copy()  # a copy: writable, as the file is gone

    def _from_npy(self, path: str, data: bytes, rows: int | None) -> np.ndarray:
        try:
            array = np.load(io.BytesIO(data), allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"input_data_file {path!r} is not a readable .npy file: {exc}") from None
        kind_fits = array.dtype.kind in "SU" if self.dtype.kind == "O" else np.can_cast(array.dtype, self.dtype)
        if not kind_fits:
            raise ConfigurationError(f"input_data_file {path!r} holds {array.dtype}, which is not {self.datatype}")
        if self.dtype.kind == "O":
            array = np.vectorize(lambda item: item.encode() if isinstance(item, str) else bytes(item), otypes=[object])(
                array
            )
        else:
            array = array.astype(self.dtype)
        if array.shape == self.dims:
            return array if rows is None else np.repeat(array[np.newaxis], rows, axis=0)
        if rows is not None and array.shape == (rows, *self.dims):
            return array
        batch = f" or {[rows, *self.dims]}" if rows is not None else ""
        raise ConfigurationError(
            f"input_data_file {path!r} has shape {list(array.shape)}; expected {list(self.dims)}{batch}"
        )

    def document(self) -> dict[str, Any]:
        """Triton's ``ModelWarmup.Input`` (JSON form): ``data_type``, ``dims`` and the data source."""
        document: dict[str, Any] = {"data_type": to_config_type(self.dtype), "dims": list(self.dims)}
        if self.input_data_file is not None:
            document["input_data_file"] = os.fspath(self.input_data_file)
        elif self.random_data:
            document["random_data"] = True
        else:
            document["zero_data"] = True
        return document

    def to_wire(self) -> dict[str, Any]:
        """A JSON-able form (`from_wire` reverses it)."""
        path = self.input_data_file
        return {
            "datatype": self.datatype,
            "shape": list(self.dims),
            "zero_data": self.zero_data,
            "random_data": self.random_data,
            "input_data_file": None if path is None else os.fspath(path),
        }

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> WarmupInput:
        return cls(
            from_datatype(data["datatype"]),
            tuple(data["shape"]),
            data["zero_data"],
            data["random_data"],
            data["input_data_file"],
        )


@dataclass(frozen=True)
class Warmup:
    """One warmup sample of a model (Triton's ``ModelWarmup``): run ``count`` times by every instance before it
    reports ready, as one request of ``batch_size`` rows with these ``inputs`` (names of the model's inputs; those
    left out are absent, as in a request that omits them).

    ``batch_size`` is 1 to ``max_batch_size`` for a model that batches; for one that does not
    (``ModelConfig(batching=False)``), 1 (Triton's rule) or 0, both meaning one request of exactly ``shape``.

    >>> Warmup("w", 4, {"x": WarmupInput(np.float32, (2,), random_data=True)}, count=3).count
    3
    """

    name: str
    batch_size: int
    inputs: Mapping[str, WarmupInput]
    count: int = 1

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not isinstance(self.name, str) or not self.name:
            problems.append(f"name must be a non-empty string, got {self.name!r}")
        if not _int_at_least(self.batch_size, 0):
            problems.append(f"batch_size must be an int >= 0, got {self.batch_size!r}")
        if not _int_at_least(self.count, 1):
            problems.append(f"count must be an int >= 1 (how many times the sample runs), got {self.count!r}")
        inputs = self.inputs
        if (
            not isinstance(inputs, Mapping)
            or not inputs
            or not all(isinstance(k, str) and isinstance(v, WarmupInput) for k, v in inputs.items())
        ):
            problems.append(f"inputs must map input names to WarmupInput (at least one), got {inputs!r}")
        else:
            object.__setattr__(self, "inputs", MappingProxyType(dict(inputs)))
        if problems:
            raise ConfigurationError.collect(f"Warmup {self.name!r}", problems)
        object.__setattr__(self, "batch_size", int(self.batch_size))
        object.__setattr__(self, "count", int(self.count))

    def batch_problems(self, batching: bool, max_batch_size: int) -> list[str]:
        """What is wrong with ``batch_size`` for a model of this batching and ``max_batch_size``."""
        if batching and not 1 <= self.batch_size <= max_batch_size:
            return [
                f"warmup {self.name!r}: batch_size must be in 1..{max_batch_size} (max_batch_size), "
                f"got {self.batch_size}"
            ]
        if not batching and self.batch_size > 1:
            return [
                f"warmup {self.name!r}: batch_size must be 1 (or 0) for a model that does not batch, "
                f"got {self.batch_size}"
            ]
        return []

    def arrays(self, batching: bool, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """The sample's input arrays: ``(batch_size, *shape)`` each, or ``shape`` when the model does not batch."""
        rows = self.batch_size if batching else None
        return {name: spec.array(rows, rng) for name, spec in self.inputs.items()}

    def document(self) -> dict[str, Any]:
        """Triton's ``ModelWarmup`` (JSON form), as ``/config`` reports it."""
        return {
            "name": self.name,
            "batch_size": self.batch_size,
            "inputs": {name: spec.document() for name, spec in self.inputs.items()},
            "count": self.count,
        }

    def to_wire(self) -> dict[str, Any]:
        """A JSON-able form (`from_wire` reverses it)."""
        return {
            "name": self.name,
            "batch_size": self.batch_size,
            "inputs": {name: spec.to_wire() for name, spec in self.inputs.items()},
            "count": self.count,
        }

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Warmup:
        inputs = {name: WarmupInput.from_wire(spec) for name, spec in data["inputs"].items()}
        return cls(data["name"], data["batch_size"], inputs, data["count"])


def warmup_problems(warmups: Sequence[Warmup], inputs: Sequence[Tensor], batching: bool) -> list[str]:
    """What is wrong with a model's warmups against its ``inputs``, found at ``bind``: input names the model
    lacks, dtypes and shapes it would refuse from a client, data files that cannot be read or do not fit."""
    by_name = {tensor.name: tensor for tensor in inputs}
    problems = []
    for warmup in warmups:
        for name, spec in warmup.inputs.items():
            where = f"warmup {warmup.name!r} input {name!r}"
            tensor = by_name.get(name)
            if tensor is None:
                problems.append(f"{where}: the model has no such input (inputs: {sorted(by_name)})")
                continue
            if spec.dtype != tensor.dtype:
                problems.append(f"{where}: dtype {spec.datatype} differs from the input's {tensor.datatype}")
            if not tensor.accepts(spec.shape):
                problems.append(f"{where}: shape {list(spec.shape)} does not fit the input's {list(tensor.shape)}")
            if spec.input_data_file is not None:
                try:
                    spec.array(warmup.batch_size if batching else None, np.random.default_rng(0))
                except ConfigurationError as exc:
                    problems.append(f"{where}: {exc}")
    return problems


def _random(dtype: np.dtype[Any], shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    if dtype.kind == "f":
        return rng.random(size=shape).astype(dtype)
    out = np.empty(math.prod(shape), dtype=object)
    for i in range(out.size):
        out[i] = rng.bytes(int(rng.integers(1, _RANDOM_BYTES_MAX, endpoint=True)))
    return out.reshape(shape)


def _count_bytes_elements(data: bytes, path: str) -> int:
    """How many length-prefixed BYTES elements ``data`` holds (`ConfigurationError` if its framing is broken)."""
    offset, count = 0, 0
    while offset < len(data):
        if offset + _LENGTH.size > len(data):
            raise ConfigurationError(f"input_data_file {path!r}: BYTES data ends inside an element's length")
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += _LENGTH.size + length
        if offset > len(data):
            raise ConfigurationError(f"input_data_file {path!r}: BYTES element {count} is cut short")
        count += 1
    return count
