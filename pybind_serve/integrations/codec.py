"""The client side of a KServe v2 REST inference call, sans I/O: numpy arrays to a request body with the
binary tensor data extension, and a response body back to numpy arrays or to the error it answers.

::

    body, header_length = encode_request({"x": array})
    ... POST body to /v2/models/{name}/infer with Inference-Header-Content-Length: header_length ...
    outputs = decode_response(status, body, response_header_length)   # or raises an InferenceError

The server side of the same wire is `pybind_serve.protocol.rest`; this module is its mirror image.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..dtypes import from_datatype, is_bytes, to_datatype
from ..errors import ConfigurationError, InferenceError, InternalServerError, InvalidInputError, from_http_status
from ..protocol.tensor_codec import array_from_buffer, array_to_buffer

__all__ = ["HEADER_LENGTH", "conform_inputs", "decode_metadata", "decode_response", "encode_request"]

HEADER_LENGTH = "Inference-Header-Content-Length"
_dump_json = json.JSONEncoder(separators=(",", ":")).encode


def encode_request(
    inputs: Mapping[str, np.ndarray],
    parameters: Mapping[str, Any] | None = None,
    outputs: Sequence[str] | None = None,
) -> tuple[bytes, int]:
    """A request body carrying every input as binary data and asking for binary outputs; and the length of
    its JSON header (the ``Inference-Header-Content-Length`` header).

    >>> body, n = encode_request({"x": np.array([[1.0, 2.0]], dtype=np.float32)})
    >>> body[:n]
    b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"parameters":{"binary_data_size":8}}],\
"parameters":{"binary_data_output":true}}'
    >>> len(body) - n
    8
    """
    entries: list[dict[str, Any]] = []
    buffers: list[bytes | memoryview] = []
    for name, array in inputs.items():
        datatype = _datatype(name, array)
        buffer = array_to_buffer(array, datatype)
        entries.append(
            {
                "name": name,
                "datatype": datatype,
                "shape": list(array.shape),
                "parameters": {"binary_data_size": len(buffer)},
            }
        )
        buffers.append(buffer)
    document: dict[str, Any] = {"inputs": entries, "parameters": {"binary_data_output": True, **(parameters or {})}}
    if outputs is not None:
        document["outputs"] = [{"name": name} for name in outputs]
    header = _dump_json(document).encode()
    return b"".join([header, *buffers]), len(header)


def _datatype(name: str, array: np.ndarray) -> str:
    try:
        return to_datatype(array.dtype)
    except ConfigurationError as exc:
        raise InvalidInputError(f"input {name!r}: {exc}") from None


def conform_inputs(inputs: Mapping[str, Any], datatypes: Mapping[str, str]) -> dict[str, np.ndarray]:
    """Each input as a numpy array of its declared datatype where that is a safe or same-kind cast (a JSON
    list of floats for an FP32 input, float64 for FP32, int64 for FP64); others are left for the server to
    refuse with a message that names the model. Inputs the model does not declare are left as they are.

    >>> conform_inputs({"x": [[1, 2]]}, {"x": "FP32"})["x"].dtype
    dtype('float32')
    """
    conformed = {}
    for name, value in inputs.items():
        try:
            array = np.asarray(value)
        except ValueError as exc:  # a ragged nested list
            raise InvalidInputError(f"input {name!r} is not an array: {exc}") from None
        datatype = datatypes.get(name)
        if datatype is not None:
            array = _cast(array, from_datatype(datatype))
        conformed[name] = array
    return conformed


def _cast(array: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    if array.dtype == dtype:
        return array
    if is_bytes(dtype):
        return array if is_bytes(array.dtype) else array.astype(object)
    if is_bytes(array.dtype) or not np.can_cast(array.dtype, dtype, "same_kind"):
        return array
    return array.astype(dtype)


def decode_response(status: int, body: bytes | bytearray, header_length: int | None) -> dict[str, np.ndarray]:
    """The outputs of a 200 response to `encode_request`'s body, by name (arrays over ``body``, writable when
    it is a bytearray); the error of any other status, raised as the `InferenceError` of that status with
    the server's message. A response this cannot read raises `InternalServerError`.

    >>> decode_response(503, b'{"error": "queue of model \\'m\\' v1 is full"}', None)
    Traceback (most recent call last):
    ...
    pybind_serve.errors.UnavailableError: queue of model 'm' v1 is full
    """
    if status != 200:
        raise from_http_status(status, _error_message(status, body))
    document, binary = _split(body, header_length)
    outputs, offset = {}, 0
    for entry in _list(document, "outputs"):
        name, datatype, shape, size = _output_header(entry)
        try:
            outputs[name] = array_from_buffer(binary[offset : offset + size], datatype, shape)
        except InvalidInputError as exc:
            raise _malformed(f"output {name!r} that does not decode: {exc}") from None
        offset += size
    return outputs


def decode_metadata(status: int, body: bytes | bytearray) -> dict[str, str]:
    """The datatype of each input, by name, from a model metadata response (``GET /v2/models/{name}``)."""
    if status != 200:
        raise from_http_status(status, _error_message(status, body))
    document, _ = _split(body, None)
    try:
        return {str(entry["name"]): str(entry["datatype"]) for entry in _list(document, "inputs")}
    except (KeyError, TypeError):
        raise _malformed("model metadata without input names and datatypes") from None


def _error_message(status: int, body: bytes | bytearray) -> str:
    try:
        message = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {status}: {bytes(body[:200]).decode(errors='replace')}"
    return str(message)


def _split(body: bytes | bytearray, header_length: int | None) -> tuple[dict[str, Any], memoryview]:
    view = memoryview(body)
    end = len(view) if header_length is None else header_length
    try:
        document = json.loads(bytes(view[:end]))
    except ValueError as exc:
        raise _malformed(f"a response that is not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise _malformed(f"a JSON {type(document).__name__} where an object was expected")
    return document, view[end:]


def _list(document: dict[str, Any], key: str) -> list[Any]:
    value = document.get(key)
    if not isinstance(value, list):
        raise _malformed(f"a response without an {key!r} list")
    return value


def _output_header(entry: Any) -> tuple[str, str, list[int], int]:
    try:
        name, datatype, shape = str(entry["name"]), str(entry["datatype"]), [int(n) for n in entry["shape"]]
        size = entry["parameters"]["binary_data_size"]
    except (KeyError, TypeError, ValueError):
        raise _malformed(f"an output entry without name, datatype, shape and binary_data_size: {entry!r}") from None
    if not isinstance(size, int) or size < 0:
        raise _malformed(f"output {name!r} with binary_data_size {size!r}")
    return name, datatype, shape, size


def _malformed(what: str) -> InferenceError:
    return InternalServerError(f"the server sent {what}")
