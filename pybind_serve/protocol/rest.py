"""KServe v2 REST inference bodies, JSON and the binary tensor data extension, sans I/O.

The HTTP front hands in the raw body and headers and sends back what comes out::

    body = decode_body(raw, headers.get("content-encoding"), max_body_bytes)
    request = parse_infer_request(body, header_length, spec)      # Inference-Header-Content-Length
    ... run the model ...
    payload, header_length = encode_infer_response(spec, request, outputs)

Every client mistake raises `InvalidInputError` (HTTP 400) with a message that names the model, the tensor,
what was expected and what it got. Request parameters: ``priority``, ``timeout`` (µs) and
``binary_data_output`` are taken out; a request that belongs to a sequence (non-zero ``sequence_id``,
``sequence_start`` / ``sequence_end`` true) is rejected, as pybind_serve serves stateless models only;
``triton_``-prefixed keys (Triton's internal options) are dropped; the rest are the custom parameters
passed to the function. Shared-memory tensors are rejected here.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import numpy as np

from ..errors import BatchTooLargeError, InvalidInputError, OutputValidationError, PayloadTooLargeError
from ..tensor import Tensor
from .messages import InferRequest, ModelSpec, RequestedOutput
from .tensor_codec import array_from_buffer, array_from_json, array_to_buffer, array_to_json, datatype_of

__all__ = ["decode_body", "encode_error", "encode_infer_response", "parse_infer_request"]

_GZIP_WBITS = 16 + zlib.MAX_WBITS
_NO_BINARY = memoryview(b"")
_NO_PARAMETERS: dict[str, Any] = {}
# Bound once: json.loads / json.dumps with options build a decoder / encoder on every call.
_load_json = json.JSONDecoder().decode
_dump_json = json.JSONEncoder(separators=(",", ":")).encode


def decode_body(body: bytes, content_encoding: str | None, max_body_bytes: int) -> bytes:
    """The request body with its ``Content-Encoding`` (gzip, deflate as zlib or raw, identity) undone.

    Decompression stops as soon as the output would pass ``max_body_bytes`` (`PayloadTooLargeError`), so a
    zip bomb never allocates more than the limit.

    >>> import gzip
    >>> decode_body(gzip.compress(b'{"inputs": []}'), "gzip", 1024)
    b'{"inputs": []}'
    """
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "identity":
        if len(body) > max_body_bytes:
            raise PayloadTooLargeError(f"request body of {len(body)} bytes exceeds max_body_bytes {max_body_bytes}")
        return body
    if encoding in ("gzip", "x-gzip"):
        return _inflate(body, _GZIP_WBITS, max_body_bytes)
    if encoding == "deflate":
        # HTTP's "deflate" means zlib-wrapped, but some clients send raw deflate: tell them apart by the header.
        return _inflate(body, zlib.MAX_WBITS if _has_zlib_header(body) else -zlib.MAX_WBITS, max_body_bytes)
    raise InvalidInputError(f"unsupported Content-Encoding {content_encoding!r}; use gzip, deflate or identity")


def _has_zlib_header(body: bytes) -> bool:
    return len(body) >= 2 and body[0] & 0x0F == 8 and ((body[0] << 8) | body[1]) % 31 == 0


def _inflate(body: bytes, wbits: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size, data = 0, body
    while True:  # one pass per gzip member: concatenated members are one valid gzip stream
        inflater = zlib.decompressobj(wbits)
        try:
            chunk = inflater.decompress(data, limit + 1 - size)
        except zlib.error as exc:
            raise InvalidInputError(f"corrupt compressed request body: {exc}") from None
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"decompressed request body exceeds max_body_bytes {limit}")
        chunks.append(chunk)
        if not inflater.eof:
            raise InvalidInputError("corrupt compressed request body: the compressed stream is cut short")
        data = inflater.unused_data
        if not data:
            return b"".join(chunks)
        if wbits != _GZIP_WBITS:
            raise InvalidInputError(f"corrupt compressed request body: {len(data)} bytes after the end of the stream")


def parse_infer_request(body: bytes, header_length: int | None, spec: ModelSpec) -> InferRequest:
    """Parse and validate a KServe v2 REST infer request for the model ``spec``.

    ``header_length`` is the ``Inference-Header-Content-Length`` header (None: the whole body is JSON);
    binary inputs are read-only views into ``body``, never copies.

    >>> import numpy as np
    >>> from pybind_serve.config import ModelConfig
    >>> spec = ModelSpec("add", 1, (Tensor("x", np.float32, (2,)),), (Tensor("y", np.float32, (2,)),), ModelConfig())
    >>> r = parse_infer_request(b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}',
    ...                         None, spec)
    >>> r.inputs["x"], r.rows
    (array([[1., 2.]], dtype=float32), 1)
    """
    document, binary = _split_body(body, header_length)
    inputs, rows = _parse_inputs(document.get("inputs"), binary, spec)
    request = InferRequest(model=spec.name, version=spec.version, inputs=inputs, rows=rows, id=_parse_id(document))
    _apply_parameters(request, document.get("parameters"), spec)
    request.outputs = _parse_outputs(document.get("outputs"), spec)
    return request


def _split_body(body: bytes, header_length: int | None) -> tuple[dict[str, Any], memoryview]:
    if header_length is None:
        header, binary = body, _NO_BINARY
    elif isinstance(header_length, int) and not isinstance(header_length, bool) and 0 <= header_length <= len(body):
        header, binary = body[:header_length], memoryview(body)[header_length:]
    else:
        raise InvalidInputError(
            f"Inference-Header-Content-Length {header_length!r} must be an int in 0..{len(body)} (the body size)"
        )
    try:
        document = _load_json(header.decode())
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise InvalidInputError(f"malformed JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidInputError(f"the request must be a JSON object, got {type(document).__name__}")
    return document, binary


def _parse_inputs(entries: Any, binary: memoryview, spec: ModelSpec) -> tuple[dict[str, np.ndarray], int]:
    if not isinstance(entries, list):
        raise InvalidInputError(f"a request for {spec.label} needs an 'inputs' list, got {type(entries).__name__}")
    specs = {tensor.name: tensor for tensor in spec.inputs}
    inputs: dict[str, np.ndarray] = {}
    rows, offset = 0, 0
    for entry in entries:
        tensor, datatype, shape, batch = _input_header(entry, specs, inputs, spec)
        if rows and batch != rows:
            raise InvalidInputError(
                f"input {tensor.name!r} of {spec.label}: batch size {batch} differs from {rows} of input "
                f"{next(iter(inputs))!r}; all inputs of a request must have the same batch size"
            )
        rows = batch
        inputs[tensor.name], offset = _input_data(entry, tensor, datatype, shape, binary, offset, spec)
    if offset != len(binary):
        raise InvalidInputError(
            f"the request for {spec.label} has {len(binary) - offset} bytes of binary data after its inputs "
            "(the sum of their binary_data_size)"
        )
    missing = [tensor.name for tensor in spec.inputs if not tensor.optional and tensor.name not in inputs]
    if missing:
        noun = "input" if len(missing) == 1 else "inputs"
        raise InvalidInputError(f"{spec.label}: missing required {noun} {_names(missing)}")
    return inputs, rows or 1


def _names(names: list[str]) -> str:
    return ", ".join(repr(name) for name in names)


def _input_header(
    entry: Any, specs: dict[str, Tensor], seen: dict[str, np.ndarray], spec: ModelSpec
) -> tuple[Tensor, str, list[int], int]:
    if not isinstance(entry, dict):
        raise InvalidInputError(f"each entry of 'inputs' must be a JSON object, got {type(entry).__name__}")
    name = entry.get("name")
    tensor = specs.get(name) if isinstance(name, str) else None
    if tensor is None:
        raise InvalidInputError(f"{spec.label} has no input {name!r}; expected inputs: {_names(list(specs))}")
    if name in seen:
        raise InvalidInputError(f"input {name!r} of {spec.label} is given twice")
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(type(dim) is int and dim >= 0 for dim in shape):
        raise InvalidInputError(f"input {name!r} of {spec.label}: shape must be a list of ints >= 0, got {shape!r}")
    datatype = datatype_of(tensor.dtype)
    return tensor, datatype, shape, _check_input_type(tensor, datatype, entry.get("datatype"), shape, spec)


def _check_input_type(tensor: Tensor, expected: str, datatype: Any, shape: list[int], spec: ModelSpec) -> int:
    """Compare an input's datatype and shape with its spec; return its batch size (1 without batching)."""
    config = spec.config
    batching = config.batching
    if datatype != expected or (batching and not shape) or not tensor.accepts(shape[1:] if batching else shape):
        shown = [-1, *tensor.shape] if batching else list(tensor.shape)
        raise InvalidInputError(
            f"input {tensor.name!r} of {spec.label}: expected {expected} shape {shown}, got {datatype} {shape}"
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


def _input_data(
    entry: dict[str, Any],
    tensor: Tensor,
    datatype: str,
    shape: list[int],
    binary: memoryview,
    offset: int,
    spec: ModelSpec,
) -> tuple[np.ndarray, int]:
    """The input's array, from JSON ``data`` or from the binary data at ``offset``; and the next offset."""
    try:
        parameters = entry.get("parameters")
        if parameters is None:
            parameters = _NO_PARAMETERS
        elif not isinstance(parameters, dict):
            raise InvalidInputError(f"'parameters' must be a JSON object, got {parameters!r}")
        if "shared_memory_region" in parameters:
            raise InvalidInputError("shared-memory inputs are not supported")
        size = parameters.get("binary_data_size")
        if ("data" in entry) == (size is not None):
            both = "data" in entry
            raise InvalidInputError(f"give {'only one of' if both else 'either'} 'data' or parameters.binary_data_size")
        if size is None:
            return array_from_json(entry["data"], datatype, shape), offset
        if type(size) is not int or size < 0:
            raise InvalidInputError(f"binary_data_size must be an int >= 0, got {size!r}")
        if offset + size > len(binary):
            raise InvalidInputError(
                f"binary_data_size is {size} but only {len(binary) - offset} bytes of binary data remain"
            )
        return array_from_buffer(binary[offset : offset + size], datatype, shape), offset + size
    except InvalidInputError as exc:
        raise InvalidInputError(f"input {tensor.name!r} of {spec.label}: {exc}") from None


def _parse_id(document: dict[str, Any]) -> str:
    request_id = document.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidInputError(f"request 'id' must be a string, got {request_id!r}")
    return request_id


def _apply_parameters(request: InferRequest, parameters: Any, spec: ModelSpec) -> None:
    if parameters is None:
        return
    if not isinstance(parameters, dict):
        raise InvalidInputError(f"request 'parameters' must be a JSON object, got {parameters!r}")
    request.priority = _non_negative_int(parameters.pop("priority", 0), "priority")
    request.timeout_us = _non_negative_int(parameters.pop("timeout", 0), "timeout")
    binary_output = parameters.pop("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise InvalidInputError(f"parameter 'binary_data_output' must be true or false, got {binary_output!r}")
    request.binary_output = binary_output
    _drop_sequence_parameters(parameters, spec)
    request.parameters = {key: value for key, value in parameters.items() if not key.startswith("triton_")}


def _non_negative_int(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidInputError(f"parameter {name!r} must be an int >= 0, got {value!r}")
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


def _parse_outputs(outputs: Any, spec: ModelSpec) -> tuple[RequestedOutput, ...] | None:
    if outputs is None or outputs == []:  # KServe: none requested means all outputs
        return None
    if not isinstance(outputs, list):
        raise InvalidInputError(f"request 'outputs' must be a list, got {type(outputs).__name__}")
    known = [tensor.name for tensor in spec.outputs]
    requested: dict[str, RequestedOutput] = {}
    for entry in outputs:
        name = entry.get("name") if isinstance(entry, dict) else None
        if name not in known:
            raise InvalidInputError(f"{spec.label} has no output {name!r}; known outputs: {_names(known)}")
        if name in requested:
            raise InvalidInputError(f"output {name!r} of {spec.label} is requested twice")
        requested[name] = RequestedOutput(name, _output_binary(entry.get("parameters"), name, spec))
    return tuple(requested.values())


def _output_binary(parameters: Any, name: str, spec: ModelSpec) -> bool | None:
    if parameters is None:
        return None
    where = f"output {name!r} of {spec.label}"
    if not isinstance(parameters, dict):
        raise InvalidInputError(f"{where}: 'parameters' must be a JSON object, got {parameters!r}")
    if parameters.get("classification"):
        raise InvalidInputError(f"{where}: classification extension is not supported")
    if "shared_memory_region" in parameters:
        raise InvalidInputError(f"{where}: shared-memory outputs are not supported")
    binary = parameters.get("binary_data")
    if binary is not None and not isinstance(binary, bool):
        raise InvalidInputError(f"{where}: 'binary_data' must be true or false, got {binary!r}")
    return binary


def encode_infer_response(
    spec: ModelSpec, request: InferRequest, outputs: dict[str, np.ndarray]
) -> tuple[bytes, int | None]:
    """The response body for ``request`` and its ``Inference-Header-Content-Length`` (None: all JSON).

    Returns the outputs the request asked for, in its order, or else every declared output present in
    ``outputs``, in spec order. An output goes as binary data when asked for (per output, or with the
    request's ``binary_data_output``), else as a flat JSON ``data`` list. The body is built straight from the
    arrays with a single copy and keeps no reference to them, so they may be views into memory that is
    reused as soon as this returns.
    """
    entries: list[dict[str, Any]] = []
    buffers: list[bytes | memoryview] = []
    for tensor, array, binary in _selected_outputs(spec, request, outputs):
        datatype = datatype_of(tensor.dtype)
        entry: dict[str, Any] = {"name": tensor.name, "datatype": datatype, "shape": list(array.shape)}
        if binary:
            buffer = array_to_buffer(array, datatype)
            entry["parameters"] = {"binary_data_size": len(buffer)}
            buffers.append(buffer)
        else:
            entry["data"] = _json_data(array, datatype, tensor, spec)
        entries.append(entry)
    document: dict[str, Any] = {"model_name": spec.name, "model_version": str(spec.version)}
    if request.id:
        document["id"] = request.id
    document["outputs"] = entries
    # The encoder escapes non-ASCII (ensure_ascii), so the str length is the byte length.
    header = _dump_json(document).encode()
    if not buffers:
        return header, None
    return b"".join([header, *buffers]), len(header)


def _selected_outputs(
    spec: ModelSpec, request: InferRequest, outputs: dict[str, np.ndarray]
) -> list[tuple[Tensor, np.ndarray, bool]]:
    default = request.binary_output
    if request.outputs is None:
        return [(tensor, outputs[tensor.name], default) for tensor in spec.outputs if tensor.name in outputs]
    by_name = {tensor.name: tensor for tensor in spec.outputs}
    selected = []
    for wanted in request.outputs:
        array = outputs.get(wanted.name)
        if array is None or wanted.name not in by_name:
            raise OutputValidationError(f"output {wanted.name!r} of {spec.label} was requested but not returned")
        selected.append((by_name[wanted.name], array, default if wanted.binary is None else wanted.binary))
    return selected


def _json_data(array: np.ndarray, datatype: str, tensor: Tensor, spec: ModelSpec) -> list[Any]:
    try:
        return array_to_json(array, datatype)
    except OutputValidationError as exc:
        raise OutputValidationError(f"output {tensor.name!r} of {spec.label}: {exc}") from None


def encode_error(message: str) -> bytes:
    """The JSON body of an error response.

    >>> encode_error("model 'm' v1 is not ready")
    b'{"error": "model \\'m\\' v1 is not ready"}'
    """
    return json.dumps({"error": message}).encode()
