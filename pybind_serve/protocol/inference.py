"""The rules of a KServe v2 infer request that do not depend on the wire format, shared by the REST and gRPC codecs.

Each codec reads its own framing (JSON ``data`` or binary offsets; typed ``contents`` or ``raw_input_contents``)
and leaves the rest to this module, so both fronts accept and refuse the same requests with the same messages:

- `Inputs`: each input's name, datatype and shape against the spec, one batch size for all, required inputs;
- `apply_parameters`: ``priority``, ``timeout`` (µs), sequence parameters refused, ``triton_`` keys dropped,
  the rest passed to the function;
- `requested_outputs` / `selected_outputs`: which outputs the client asked for, and which a response carries;
- `shared_input`: an input that names a window of a registered shared-memory region (the system shared-memory
  extension), read in place; outputs may name one too (`RequestedOutput.shared`).

Every client mistake raises `InvalidInputError` (or its `BatchTooLargeError`) naming the model and tensor.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from ..dtypes import from_datatype
from ..errors import BatchTooLargeError, InvalidInputError, OutputValidationError
from ..spec import ModelSpec
from ..tensor import Tensor
from .messages import InferRequest, RequestedOutput
from .shared_memory import RegionLookup, SharedOutput, shared_window
from .tensor_codec import array_from_buffer, array_to_buffer, datatype_of

__all__ = [
    "Inputs",
    "apply_parameters",
    "names",
    "requested_outputs",
    "selected_outputs",
    "shared_input",
    "write_shared_output",
]


def names(items: Iterable[str]) -> str:
    """``'a', 'b'``: how messages list tensor names."""
    return ", ".join(repr(name) for name in items)


class Inputs:
    """A request's input tensors, collected in wire order: `check` each header, `add` its array, then `finish`.

    >>> from pybind_serve.config import ModelConfig
    >>> spec = ModelSpec("m", 1, (Tensor("x", np.float32, (2,)),), (Tensor("y", np.float32, (2,)),), ModelConfig())
    >>> inputs = Inputs(spec)
    >>> tensor, datatype, shape = inputs.check("x", "FP32", [1, 2])
    >>> inputs.add(tensor, np.zeros(shape, np.float32))
    >>> [(name, array.shape) for name, array in inputs.finish()[0].items()], inputs.finish()[1]
    ([('x', (1, 2))], 1)
    """

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.arrays: dict[str, np.ndarray] = {}
        self._specs = {tensor.name: tensor for tensor in spec.inputs}
        self._seen: dict[str, None] = {}  # an ordered set: messages name the first input
        self._rows = 0

    def check(self, name: Any, datatype: Any, shape: Any) -> tuple[Tensor, str, list[int]]:
        """Validate one input's header before its data is read: the spec's tensor, its datatype, its shape."""
        spec = self.spec
        tensor = self._specs.get(name) if isinstance(name, str) else None
        if tensor is None:
            raise InvalidInputError(f"{spec.label} has no input {name!r}; expected inputs: {names(self._specs)}")
        if name in self._seen:
            raise InvalidInputError(f"input {name!r} of {spec.label} is given twice")
        if not isinstance(shape, list) or not all(type(dim) is int and dim >= 0 for dim in shape):
            raise InvalidInputError(f"input {name!r} of {spec.label}: shape must be a list of ints >= 0, got {shape!r}")
        expected = datatype_of(tensor.dtype)
        batch = _check_type(tensor, expected, datatype, shape, spec)
        if self._rows and batch != self._rows:
            raise InvalidInputError(
                f"input {tensor.name!r} of {spec.label}: batch size {batch} differs from {self._rows} of input "
                f"{next(iter(self._seen))!r}; all inputs of a request must have the same batch size"
            )
        self._rows = batch
        self._seen[name] = None
        return tensor, expected, shape

    def add(self, tensor: Tensor, array: np.ndarray) -> None:
        """The array of an input that passed `check`."""
        self.arrays[tensor.name] = array

    @contextlib.contextmanager
    def reading(self, tensor: Tensor) -> Iterator[None]:
        """Prefix the errors raised while reading the data of ``tensor`` with the input and model names."""
        try:
            yield
        except InvalidInputError as exc:
            raise InvalidInputError(f"input {tensor.name!r} of {self.spec.label}: {exc}") from None

    def finish(self) -> tuple[dict[str, np.ndarray], int]:
        """The arrays by name and the request's batch size (1 without batching); refuses missing inputs."""
        missing = [t.name for t in self.spec.inputs if not t.optional and t.name not in self.arrays]
        if missing:
            noun = "input" if len(missing) == 1 else "inputs"
            raise InvalidInputError(f"{self.spec.label}: missing required {noun} {names(missing)}")
        return self.arrays, self._rows or 1


def _check_type(tensor: Tensor, expected: str, datatype: Any, shape: list[int], spec: ModelSpec) -> int:
    """Compare an input's datatype and shape with its spec; return its batch size (1 without batching)."""
    config = spec.config
    batching = config.batching
    shape_fits = (bool(shape) and tensor.accepts(shape[1:])) if batching else tensor.accepts(shape)
    if datatype != expected or not shape_fits:
        shown = [-1, *tensor.shape] if batching else list(tensor.shape)
        raise InvalidInputError(
            f"input {tensor.name!r} of {spec.label}: expected {expected} shape {shown}, got {datatype} {shape}"
            + ("" if shape_fits else _batch_dimension_hint(tensor, shape, config.max_batch_size if batching else 0))
        )
    if not batching:
        return 1
    batch = shape[0]
    if batch > config.max_batch_size:
        raise BatchTooLargeError(
            f"input {tensor.name!r} of {spec.label}: batch size {batch} exceeds max_batch_size {config.max_batch_size}"
        )
    if batch < 1:
        raise InvalidInputError(f"input {tensor.name!r} of {spec.label}: batch size must be at least 1, got {batch}")
    return batch


def _batch_dimension_hint(tensor: Tensor, shape: list[int], max_batch_size: int) -> str:
    """What a wrong shape's message adds: whether the model takes a batch dimension first, and the shape that
    was likely meant when the request has one dimension too few or too many."""
    if max_batch_size > 0:
        hint = f" (the first dim is the batch size: the model batches, up to {max_batch_size} rows"
        if tensor.accepts(shape):
            hint += f"; one sample of shape {shape} is sent as {[1, *shape]}"
        return hint + ")"
    if shape and tensor.accepts(shape[1:]):
        return f" (the model does not batch: no batch dimension, e.g. {shape[1:]})"
    return ""


def shared_input(
    name: str, datatype: str, shape: list[int], parameters: Mapping[str, Any], regions: RegionLookup | None
) -> np.ndarray | None:
    """The input's array read in place from the shared-memory window its parameters name (None: they name
    none); the window must hold exactly the tensor's bytes (BYTES: its serialized elements)."""
    found = shared_window("input", name, parameters, regions)
    if found is None:
        return None
    reference, window = found
    if datatype != "BYTES":
        needed = math.prod(shape) * np.dtype(from_datatype(datatype)).itemsize
        if reference.byte_size != needed:
            raise InvalidInputError(
                f"shared_memory_byte_size {reference.byte_size} does not match {datatype} {shape}, "
                f"which needs {needed} bytes"
            )
    return array_from_buffer(window, datatype, shape)


def apply_parameters(request: InferRequest, parameters: dict[str, Any], spec: ModelSpec) -> None:
    """Take ``priority`` and ``timeout`` out of a request's parameters (consumed: the dict is changed), refuse
    sequence parameters, drop ``triton_`` keys and keep the rest as the function's custom parameters."""
    request.priority = _non_negative_int(parameters.pop("priority", 0), "priority", spec)
    request.timeout_us = _non_negative_int(parameters.pop("timeout", 0), "timeout", spec)
    _drop_sequence_parameters(parameters, spec)
    request.parameters = {key: value for key, value in parameters.items() if not key.startswith("triton_")}


def _non_negative_int(value: Any, name: str, spec: ModelSpec) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidInputError(f"{spec.label}: parameter {name!r} must be an int >= 0, got {value!r}")
    return value


def _drop_sequence_parameters(parameters: dict[str, Any], spec: ModelSpec) -> None:
    # tritonclient sends these only for sequence models; a stateful client silently served as stateless
    # would get wrong answers, so anything but the "no sequence" values (0, "", false) is refused.
    for name in ("sequence_id", "sequence_start", "sequence_end"):
        value = parameters.pop(name, None)
        if value not in (None, 0, "", False):
            raise InvalidInputError(
                f"{spec.label} does not support sequence batching (parameter {name!r} is {value!r}); "
                "pybind_serve serves stateless models"
            )


def requested_outputs(
    entries: Iterable[tuple[Any, Any]], spec: ModelSpec, regions: RegionLookup | None = None
) -> tuple[RequestedOutput, ...] | None:
    """The outputs a request asks for, from its (name, parameters) pairs; None (every output) when none are.

    An output whose parameters name a shared-memory window (checked now, written after the model ran) gets
    it as ``shared``; ``regions`` None refuses those (the extension is off)."""
    known = [tensor.name for tensor in spec.outputs]
    requested: dict[str, RequestedOutput] = {}
    for name, parameters in entries:
        if name not in known:
            raise InvalidInputError(f"{spec.label} has no output {name!r}; known outputs: {names(known)}")
        if name in requested:
            raise InvalidInputError(f"output {name!r} of {spec.label} is requested twice")
        requested[name] = RequestedOutput(
            name, _output_binary(parameters, name, spec), _shared_output(parameters, name, spec, regions)
        )
    return tuple(requested.values()) or None  # KServe: none requested means all outputs


def _output_binary(parameters: Any, name: str, spec: ModelSpec) -> bool | None:
    if parameters is None:
        return None
    where = f"output {name!r} of {spec.label}"
    if not isinstance(parameters, dict):
        raise InvalidInputError(f"{where}: 'parameters' must be a JSON object, got {parameters!r}")
    if parameters.get("classification"):
        raise InvalidInputError(f"{where}: classification extension is not supported")
    binary = parameters.get("binary_data")
    if binary is not None and not isinstance(binary, bool):
        raise InvalidInputError(f"{where}: 'binary_data' must be true or false, got {binary!r}")
    return binary


def _shared_output(parameters: Any, name: str, spec: ModelSpec, regions: RegionLookup | None) -> SharedOutput | None:
    if not parameters:
        return None
    try:
        found = shared_window("output", name, parameters, regions)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{spec.label}: {exc}") from None
    return None if found is None else SharedOutput(*found)


def selected_outputs(
    spec: ModelSpec, request: InferRequest, outputs: dict[str, np.ndarray]
) -> list[tuple[Tensor, np.ndarray, bool, SharedOutput | None]]:
    """What a response carries: (spec, array, as binary, shared-memory window or None) for each output the
    request asked for, in its order, or else for every declared output present in ``outputs``, in spec order."""
    default = request.binary_output
    if request.outputs is None:
        return [(tensor, outputs[tensor.name], default, None) for tensor in spec.outputs if tensor.name in outputs]
    by_name = {tensor.name: tensor for tensor in spec.outputs}
    selected = []
    for wanted in request.outputs:
        array = outputs.get(wanted.name)
        if array is None or wanted.name not in by_name:
            raise OutputValidationError(f"output {wanted.name!r} of {spec.label} was requested but not returned")
        binary = default if wanted.binary is None else wanted.binary
        selected.append((by_name[wanted.name], array, binary, wanted.shared))
    return selected


def write_shared_output(
    shared: SharedOutput, tensor: Tensor, array: np.ndarray, datatype: str, spec: ModelSpec
) -> dict[str, Any]:
    """Write an output into the client's shared-memory window; its parameters for the response."""
    try:
        return shared.write(tensor.name, array_to_buffer(array, datatype))
    except InvalidInputError as exc:
        raise InvalidInputError(f"{spec.label}: {exc}") from None
