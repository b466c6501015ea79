"""Triton's generate extension (``POST .../generate`` and ``.../generate_stream``), sans I/O.

A generate request is one JSON object whose keys name the model's inputs, each with a plain JSON value: a
string (a BYTES element), a number, a boolean, or a (nested) list of them; ``parameters`` holds the request
parameters, ``id`` the request id, and any other key with a scalar value is one more parameter. Each value
becomes a tensor of one row (a scalar: one element). A response is one JSON object with ``model_name``,
``model_version`` and a key per output: a single element as a plain value (BYTES as a string), more as a
(nested) list. ``generate_stream`` sends each response as a server-sent event (`sse_event`), an error too.

>>> from pybind_serve.config import ModelConfig
>>> from pybind_serve.tensor import Tensor
>>> spec = ModelSpec("echo", 1, (Tensor("text_input", bytes, (1,)),), (Tensor("text_output", bytes, (1,)),),
...                  ModelConfig())
>>> request = parse_generate_request(b'{"text_input": "hi", "parameters": {"max_tokens": 3}}', spec)
>>> request.inputs["text_input"], request.parameters
(array([[b'hi']], dtype=object), {'max_tokens': 3})
>>> encode_generate_response(spec, request, {"text_output": request.inputs["text_input"]})
b'{"model_name":"echo","model_version":"1","text_output":"hi"}'
>>> sse_event(b'{"a":1}')
b'data: {"a":1}\\n\\n'
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from ..errors import InvalidInputError, OutputValidationError
from ..spec import ModelSpec
from .inference import Inputs, apply_parameters, names, selected_outputs
from .messages import InferRequest
from .rest import load_json
from .tensor_codec import array_from_json, array_to_json, datatype_of

__all__ = ["encode_generate_response", "parse_generate_request", "sse_event"]

_dump_json = json.JSONEncoder(separators=(",", ":")).encode
_SCALARS = (str, int, float, bool)


def parse_generate_request(body: bytes, spec: ModelSpec) -> InferRequest:
    """Parse and validate a generate request for the model ``spec`` (`InvalidInputError` names what is wrong)."""
    document = load_json(body)
    if not isinstance(document, dict):
        raise InvalidInputError(f"a generate request must be a JSON object, got {type(document).__name__}")
    parameters = document.pop("parameters", None) or {}
    if not isinstance(parameters, dict):
        raise InvalidInputError(f"'parameters' must be a JSON object, got {parameters!r}")
    request_id = document.pop("id", "")
    if not isinstance(request_id, str):
        raise InvalidInputError(f"request 'id' must be a string, got {request_id!r}")
    inputs = Inputs(spec)
    by_name = {tensor.name: tensor for tensor in spec.inputs}
    for key, value in document.items():
        if key in by_name:
            _add_input(inputs, key, value, spec)
        elif isinstance(value, _SCALARS):
            parameters[key] = value
        else:
            raise InvalidInputError(
                f"{spec.label} has no input {key!r} (inputs: {names(by_name)}), and a parameter must be a string, "
                f"number or boolean, got {type(value).__name__}"
            )
    arrays, rows = inputs.finish()
    request = InferRequest(model=spec.name, version=spec.version, inputs=arrays, rows=rows, id=request_id)
    apply_parameters(request, parameters, spec)
    return request


def _add_input(inputs: Inputs, name: str, value: Any, spec: ModelSpec) -> None:
    tensor = next(t for t in spec.inputs if t.name == name)
    shape = _shape_of(value)
    if not shape and tensor.shape:  # a plain value is one element, e.g. the usual "text_input" of shape [1]
        shape = [1]
    if spec.config.batching:
        shape = [1, *shape]
    tensor, datatype, shape = inputs.check(name, datatype_of(tensor.dtype), shape)
    with inputs.reading(tensor):
        data = value if isinstance(value, list) else [value]
        inputs.add(tensor, array_from_json(data, datatype, shape))


def _shape_of(value: Any) -> list[int]:
    """The shape of a (nested) JSON list, read along its first elements; [] for a plain value."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def encode_generate_response(spec: ModelSpec, request: InferRequest, outputs: dict[str, np.ndarray]) -> bytes:
    """The JSON response for ``request``: every output present (else those asked for), one row each."""
    document: dict[str, Any] = {"model_name": spec.name, "model_version": str(spec.version)}
    if request.id:
        document["id"] = request.id
    for tensor, array, _, _ in selected_outputs(spec, request, outputs):
        shape = array.shape[1:] if spec.config.batching and array.ndim else array.shape
        try:
            values = array_to_json(array, datatype_of(tensor.dtype))
        except OutputValidationError as exc:
            raise OutputValidationError(f"output {tensor.name!r} of {spec.label}: {exc}") from None
        if len(values) != math.prod(shape):
            raise OutputValidationError(
                f"output {tensor.name!r} of {spec.label}: generate answers one row, got shape {list(array.shape)}"
            )
        document[tensor.name] = values[0] if len(values) == 1 else _nested(values, shape)
    return _dump_json(document).encode()


def _nested(values: list[Any], shape: tuple[int, ...]) -> list[Any]:
    if len(shape) <= 1:
        return values
    holder = np.empty(len(values), dtype=object)
    holder[:] = values
    nested: list[Any] = holder.reshape(shape).tolist()
    return nested


def sse_event(data: bytes) -> bytes:
    """One server-sent event carrying ``data`` (a JSON document, which never holds a raw newline)."""
    return b"data: " + data + b"\n\n"
