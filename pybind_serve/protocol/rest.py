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
passed to the function. Inputs and outputs may name windows of registered shared-memory regions (the system
shared-memory extension) when the front passes its registry (``regions``). The rules the gRPC codec shares (tensor
names, datatypes, shapes, batch sizes, parameters, requested outputs) live in `inference`.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import InvalidInputError, OutputValidationError, PayloadTooLargeError
from ..spec import ModelSpec
from ..tensor import Tensor
from .inference import (
    Inputs,
    apply_parameters,
    requested_outputs,
    selected_outputs,
    shared_input,
    write_shared_output,
)
from .messages import InferRequest, RequestedOutput
from .shared_memory import RegionLookup
from .tensor_codec import array_from_buffer, array_from_json, array_to_buffer, array_to_json, datatype_of

__all__ = ["decode_body", "encode_error", "encode_infer_response", "is_identity", "load_json", "parse_infer_request"]

_GZIP_WBITS = 16 + zlib.MAX_WBITS
_NO_BINARY = memoryview(b"")
_NO_PARAMETERS: dict[str, Any] = {}
# Bound once: json.loads / json.dumps with options build a decoder / encoder on every call.
_load_json = json.JSONDecoder().decode
_dump_json = json.JSONEncoder(separators=(",", ":")).encode


def decode_body(body: bytes, content_encoding: str | None, max_body_bytes: int) -> bytes:
    """The request body with its ``Content-Encoding`` (gzip, deflate as zlib or raw, identity) undone.

    Decompression never holds more than `KEEP_INFLATED` bytes before it knows the result fits: past that it only
    counts, and inflates a second time into place once the size is known to be within ``max_body_bytes``. A zip
    bomb is refused (`PayloadTooLargeError`) for the CPU time of inflating ``max_body_bytes``, with little memory.
    It takes that long, so the front runs it off its event loop.

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


def is_identity(content_encoding: str | None) -> bool:
    """Whether `decode_body` has nothing to inflate (and so costs nothing)."""
    return content_encoding is None or content_encoding.strip().lower() == "identity"


def load_json(data: bytes) -> Any:
    """A request's JSON document; `InvalidInputError` if it is not UTF-8 JSON, or nests too deeply to parse.

    >>> load_json(b"[" * 100_000)
    Traceback (most recent call last):
    ...
    pybind_serve.errors.InvalidInputError: malformed JSON: nested too deeply
    """
    try:
        return _load_json(data.decode())
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise InvalidInputError(f"malformed JSON: {exc}") from None
    except RecursionError:
        raise InvalidInputError("malformed JSON: nested too deeply") from None


def _has_zlib_header(body: bytes) -> bool:
    return len(body) >= 2 and body[0] & 0x0F == 8 and ((body[0] << 8) | body[1]) % 31 == 0


KEEP_INFLATED = 16 << 20  # a decompressed body larger than this is inflated twice: counted, then written in place
_IN_STEP = 64 << 10  # compressed bytes fed at a time (zlib copies what it leaves unconsumed on every call)
_OUT_STEP = 1 << 20  # decompressed bytes taken at a time


def _inflate(body: bytes, wbits: int, limit: int) -> bytes:
    kept: list[bytes] | None = []
    size = 0
    for chunk in _inflated_chunks(body, wbits):
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"decompressed request body exceeds max_body_bytes {limit}")
        if kept is not None:
            kept.append(chunk)
            if size > KEEP_INFLATED:
                kept = None  # from here on only count
    if kept is not None:
        return kept[0] if len(kept) == 1 else b"".join(kept)
    inflated = bytearray(size)
    at = 0
    for chunk in _inflated_chunks(body, wbits):
        inflated[at : at + len(chunk)] = chunk
        at += len(chunk)
    return inflated  # type: ignore[return-value]  # bytes-like: parsed through memoryviews and decode()


def _inflated_chunks(body: bytes, wbits: int) -> Iterator[bytes]:
    """The decompressed body, `_OUT_STEP` bytes at a time; gzip members one after the other."""
    view, start = memoryview(body), 0
    while True:
        inflater = zlib.decompressobj(wbits)
        tail: bytes | memoryview = b""
        at = start
        while not inflater.eof:
            if not tail and at < len(view):
                tail, at = view[at : at + _IN_STEP], min(at + _IN_STEP, len(view))
            try:
                chunk = inflater.decompress(tail, _OUT_STEP)
            except zlib.error as exc:
                raise InvalidInputError(f"corrupt compressed request body: {exc}") from None
            tail = inflater.unconsumed_tail
            if chunk:
                yield chunk
            elif not tail and at == len(view) and not inflater.eof:
                raise InvalidInputError("corrupt compressed request body: the compressed stream is cut short")
        start = at - len(inflater.unused_data)
        if start == len(view):
            return
        if wbits != _GZIP_WBITS:  # only gzip streams may hold several members
            raise InvalidInputError(
                f"corrupt compressed request body: {len(view) - start} bytes after the end of the stream"
            )


def parse_infer_request(
    body: bytes, header_length: int | None, spec: ModelSpec, regions: RegionLookup | None = None
) -> InferRequest:
    """Parse and validate a KServe v2 REST infer request for the model ``spec``.

    ``header_length`` is the ``Inference-Header-Content-Length`` header (None: the whole body is JSON);
    binary inputs are read-only views into ``body``, never copies; inputs in shared memory are views of the
    region (``regions``: the registered ones; None refuses shared-memory tensors).

    >>> import numpy as np
    >>> from pybind_serve.config import ModelConfig
    >>> spec = ModelSpec("add", 1, (Tensor("x", np.float32, (2,)),), (Tensor("y", np.float32, (2,)),), ModelConfig())
    >>> r = parse_infer_request(b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}',
    ...                         None, spec)
    >>> r.inputs["x"], r.rows
    (array([[1., 2.]], dtype=float32), 1)
    """
    document, binary = _split_body(body, header_length)
    inputs, rows = _parse_inputs(document.get("inputs"), binary, spec, regions)
    request = InferRequest(model=spec.name, version=spec.version, inputs=inputs, rows=rows, id=_parse_id(document))
    _apply_parameters(request, document.get("parameters"), spec)
    request.outputs = _parse_outputs(document.get("outputs"), spec, regions)
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
    document = load_json(header)
    if not isinstance(document, dict):
        raise InvalidInputError(f"the request must be a JSON object, got {type(document).__name__}")
    return document, binary


def _parse_inputs(
    entries: Any, binary: memoryview, spec: ModelSpec, regions: RegionLookup | None
) -> tuple[dict[str, np.ndarray], int]:
    if not isinstance(entries, list):
        raise InvalidInputError(f"a request for {spec.label} needs an 'inputs' list, got {type(entries).__name__}")
    inputs = Inputs(spec)
    offset = 0
    for entry in entries:
        if not isinstance(entry, dict):
            raise InvalidInputError(f"each entry of 'inputs' must be a JSON object, got {type(entry).__name__}")
        tensor, datatype, shape = inputs.check(entry.get("name"), entry.get("datatype"), entry.get("shape"))
        with inputs.reading(tensor):
            array, offset = _input_data(entry, datatype, shape, binary, offset, regions)
        inputs.add(tensor, array)
    if offset != len(binary):
        raise InvalidInputError(
            f"the request for {spec.label} has {len(binary) - offset} bytes of binary data after its inputs "
            "(the sum of their binary_data_size)"
        )
    return inputs.finish()


def _input_data(
    entry: dict[str, Any],
    datatype: str,
    shape: list[int],
    binary: memoryview,
    offset: int,
    regions: RegionLookup | None,
) -> tuple[np.ndarray, int]:
    """The input's array, from JSON ``data``, from the binary data at ``offset`` or from shared memory; and
    the next offset."""
    parameters = entry.get("parameters")
    if parameters is None:
        parameters = _NO_PARAMETERS
    elif not isinstance(parameters, dict):
        raise InvalidInputError(f"'parameters' must be a JSON object, got {parameters!r}")
    size = parameters.get("binary_data_size")
    shared = shared_input(entry["name"], datatype, shape, parameters, regions)
    if shared is not None:
        if "data" in entry or size is not None:
            raise InvalidInputError("give either shared memory parameters or 'data' / binary_data_size, not both")
        return shared, offset
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
    binary_output = parameters.pop("binary_data_output", False)  # the binary tensor data extension's own
    if not isinstance(binary_output, bool):
        raise InvalidInputError(f"parameter 'binary_data_output' must be true or false, got {binary_output!r}")
    request.binary_output = binary_output
    apply_parameters(request, parameters, spec)


def _parse_outputs(outputs: Any, spec: ModelSpec, regions: RegionLookup | None) -> tuple[RequestedOutput, ...] | None:
    if outputs is None:
        return None
    if not isinstance(outputs, list):
        raise InvalidInputError(f"request 'outputs' must be a list, got {type(outputs).__name__}")
    pairs = ((e.get("name"), e.get("parameters")) if isinstance(e, dict) else (None, None) for e in outputs)
    return requested_outputs(pairs, spec, regions)


def encode_infer_response(
    spec: ModelSpec, request: InferRequest, outputs: dict[str, np.ndarray]
) -> tuple[bytes, int | None]:
    """The response body for ``request`` and its ``Inference-Header-Content-Length`` (None: all JSON).

    Returns the outputs the request asked for, in its order, or else every declared output present in
    ``outputs``, in spec order. An output goes as binary data when asked for (per output, or with the
    request's ``binary_data_output``), else as a flat JSON ``data`` list; an output asked into shared memory
    is written there, and its entry carries no data (as Triton's). The body is built straight from the arrays with
    a single copy and keeps no reference to them, so they may be views into memory that is reused as soon as
    this returns.
    """
    entries: list[dict[str, Any]] = []
    buffers: list[bytes | memoryview] = []
    for tensor, array, binary, shared in selected_outputs(spec, request, outputs):
        datatype = datatype_of(tensor.dtype)
        entry: dict[str, Any] = {"name": tensor.name, "datatype": datatype, "shape": list(array.shape)}
        if shared is not None:
            # No "parameters": Triton's C++ client reads binary_data_size from any an output has.
            write_shared_output(shared, tensor, array, datatype, spec)
        elif binary:
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
