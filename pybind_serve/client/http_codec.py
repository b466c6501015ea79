"""KServe v2 REST for the clients, sans I/O: each operation as an `HttpRequest` and the parser of its reply.

Infer requests carry every input as binary data (the binary tensor data extension: a JSON header, then the
tensors' raw bytes, split by ``Inference-Header-Content-Length``) and ask for binary outputs; outputs that a
server sends as JSON ``data`` anyway are read too. An error answer raises the `pybind_serve.errors` class of its
status with the server's message. The server side of the same wire is `pybind_serve.protocol.rest`.

>>> body, header_length = encode_infer({"x": np.array([[1.0, 2.0]], dtype=np.float32)})
>>> body[:header_length]
b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"parameters":{"binary_data_size":8}}],\
"parameters":{"binary_data_output":true}}'
>>> len(body) - header_length
8
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import numpy as np

from ..errors import InferenceError, UnsupportedError, from_http_status
from ..protocol.tensor_codec import array_to_buffer
from .exchange import Call, CallOptions, HttpReply, HttpRequest, ModelRef
from .inputs import datatype_of
from .model import ModelMetadata, RemoteModelConfig, config_from_document, malformed, metadata_from_document
from .outputs import read_output
from .shared_memory import Placement

__all__ = ["HEADER_LENGTH", "HttpCodec", "decode_infer", "encode_infer", "error_of"]

HEADER_LENGTH = "Inference-Header-Content-Length"
# Bound once: json.loads / json.dumps with options build a decoder / encoder on every call.
_dump_json = json.JSONEncoder(separators=(",", ":")).encode
_load_json = json.JSONDecoder().decode
_NOT_ROUTED = (404, 405)  # what a server without the repository extension answers its URLs with


class HttpCodec:
    """The REST requests of each client operation, and the parsers of their replies."""

    def model_ready(self, model: ModelRef, options: CallOptions) -> Call[bool]:
        request = _get(f"{_path(model)}/ready", model.label, options)
        return Call(request, _ready)

    def model_metadata(self, model: ModelRef, options: CallOptions) -> Call[ModelMetadata]:
        return Call(_get(_path(model), model.label, options), lambda r: metadata_from_document(_json(r), model.label))

    def model_config(self, model: ModelRef, options: CallOptions) -> Call[RemoteModelConfig]:
        request = _get(f"{_path(model)}/config", model.label, options)
        return Call(request, lambda r: config_from_document(_json(r), model.label))

    def infer(
        self,
        model: ModelRef,
        inputs: Mapping[str, np.ndarray],
        parameters: Mapping[str, Any],
        outputs: Sequence[str] | None,
        options: CallOptions,
        placement: Placement | None = None,
    ) -> Call[dict[str, np.ndarray]]:
        body, header_length = encode_infer(inputs, parameters, outputs, placement)
        headers = {**options.headers, HEADER_LENGTH: str(header_length), "Content-Type": "application/octet-stream"}
        request = HttpRequest("POST", f"{_path(model)}/infer", model.label, body, headers, options.timeout_s)
        return Call(
            request, decode_infer if placement is None else functools.partial(decode_infer, placement=placement)
        )

    def register_region(self, name: str, key: str, byte_size: int, options: CallOptions) -> Call[None]:
        """Register ``byte_size`` bytes of the /dev/shm segment ``key`` as system shared-memory region ``name``."""
        body = _dump_json({"key": key, "offset": 0, "byte_size": byte_size}).encode()
        return self._shared_memory(f"region/{quote(name, safe='')}/register", body, options)

    def unregister_region(self, name: str, options: CallOptions) -> Call[None]:
        return self._shared_memory(f"region/{quote(name, safe='')}/unregister", b"{}", options)

    def _shared_memory(self, action: str, body: bytes, options: CallOptions) -> Call[None]:
        headers = {**options.headers, "Content-Type": "application/json"}
        path = f"/v2/systemsharedmemory/{action}"
        request = HttpRequest("POST", path, "system shared memory", body, headers, options.timeout_s)
        return Call(request, _ok)

    def load_model(self, model: ModelRef, options: CallOptions) -> Call[None]:
        return self._repository(model, "load", options)

    def unload_model(self, model: ModelRef, options: CallOptions) -> Call[None]:
        return self._repository(model, "unload", options)

    def _repository(self, model: ModelRef, action: str, options: CallOptions) -> Call[None]:
        path = f"/v2/repository/models/{quote(model.name, safe='')}/{action}"
        headers = {**options.headers, "Content-Type": "application/json"}
        request = HttpRequest("POST", path, model.label, b"{}", headers, options.timeout_s)

        def parse(reply: HttpReply) -> None:
            if reply.status in _NOT_ROUTED:
                raise UnsupportedError(
                    f"cannot {action} {model.label}: the server has no model repository API "
                    f"(HTTP {reply.status} for POST {path}: {_message(reply)})"
                )
            if reply.status != 200:
                raise error_of(reply)

        return Call(request, parse)


@functools.lru_cache(maxsize=256)  # the same few models, on every call
def _path(model: ModelRef) -> str:
    path = f"/v2/models/{quote(model.name, safe='')}"
    return f"{path}/versions/{quote(model.version, safe='')}" if model.version else path


def _get(path: str, what: str, options: CallOptions) -> HttpRequest:
    return HttpRequest("GET", path, what, b"", dict(options.headers), options.timeout_s)


def _ok(reply: HttpReply) -> None:
    if reply.status != 200:
        raise error_of(reply)


def _ready(reply: HttpReply) -> bool:
    # Not found, or not ready: both mean "not yet" to a client waiting for the model.
    if reply.status in (400, 404, 503):
        return False
    if reply.status != 200:
        raise error_of(reply)
    return True


def _json(reply: HttpReply) -> Any:
    if reply.status != 200:
        raise error_of(reply)
    document, _ = _split(reply.body, None)
    return document


def encode_infer(
    inputs: Mapping[str, np.ndarray],
    parameters: Mapping[str, Any] | None = None,
    outputs: Sequence[str] | None = None,
    placement: Placement | None = None,
) -> tuple[bytes, int]:
    """An infer request body with every input as binary data, asking for binary outputs; and the length of its
    JSON header (the ``Inference-Header-Content-Length``). With a ``placement``, the inputs and outputs it
    places are windows of its shared-memory region instead (the inputs already written there)."""
    entries: list[dict[str, Any]] = []
    buffers: list[bytes | memoryview] = []
    for name, array in inputs.items():
        datatype = datatype_of(name, array)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if placement is not None and name in placement.inputs:
            entry["parameters"] = placement.parameters(placement.inputs[name])
        else:
            buffer = array_to_buffer(array, datatype)
            entry["parameters"] = {"binary_data_size": len(buffer)}
            buffers.append(buffer)
        entries.append(entry)
    document: dict[str, Any] = {"inputs": entries, "parameters": {"binary_data_output": True, **(parameters or {})}}
    if outputs is not None:
        document["outputs"] = [{"name": name} for name in outputs]
        if placement is not None:
            for entry in document["outputs"]:
                if entry["name"] in placement.outputs:
                    entry["parameters"] = placement.parameters(placement.outputs[entry["name"]])
    header = _dump_json(document).encode()
    return b"".join([header, *buffers]), len(header)


def decode_infer(reply: HttpReply, placement: Placement | None = None) -> dict[str, np.ndarray]:
    """The outputs of a 200 answer, by name (arrays over the body: writable when it is a bytearray; those in
    the ``placement``'s region copied out of it); the error of any other status, raised. An answer that does
    not decode raises `InternalServerError`."""
    if reply.status != 200:
        raise error_of(reply)
    length = reply.headers.get(HEADER_LENGTH)
    document, binary = _split(reply.body, None if length is None else _header_length(length, len(reply.body)))
    outputs, offset = {}, 0
    for entry in _outputs(document):
        name, datatype, shape = _output_header(entry)
        if placement is not None and name in placement.outputs:
            outputs[name] = placement.read_output(name, datatype, shape)
            continue
        size = (entry.get("parameters") or {}).get("binary_data_size")
        if size is None:
            outputs[name] = read_output(name, datatype, shape, data=entry.get("data"))
            continue
        if type(size) is not int or size < 0 or offset + size > len(binary):
            raise malformed(f"output {name!r} with binary_data_size {size!r}, {len(binary) - offset} bytes left")
        outputs[name] = read_output(name, datatype, shape, buffer=binary[offset : offset + size])
        offset += size
    return outputs


def error_of(reply: HttpReply) -> InferenceError:
    """The `pybind_serve.errors` class of an error answer's status, with the server's message."""
    return from_http_status(reply.status, _message(reply))


def _message(reply: HttpReply) -> str:
    try:
        message = json.loads(bytes(reply.body))["error"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {reply.status}: {bytes(reply.body[:200]).decode(errors='replace')}"
    return str(message)


def _header_length(value: str, size: int) -> int:
    if not value.isdigit() or int(value) > size:
        raise malformed(f"{HEADER_LENGTH} {value!r} for a body of {size} bytes")
    return int(value)


def _split(body: bytes | bytearray, header_length: int | None) -> tuple[Any, memoryview]:
    view = memoryview(body)
    end = len(view) if header_length is None else header_length
    try:
        document = _load_json(str(view[:end], "utf-8"))
    except ValueError as exc:  # UnicodeDecodeError too
        raise malformed(f"an answer that is not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise malformed(f"a JSON {type(document).__name__} where an object was expected")
    return document, view[end:]


def _outputs(document: dict[str, Any]) -> list[Any]:
    entries = document.get("outputs")
    if not isinstance(entries, list):
        raise malformed("an infer answer without an 'outputs' list", document)
    return entries


def _output_header(entry: Any) -> tuple[str, str, list[int]]:
    try:
        return str(entry["name"]), str(entry["datatype"]), [int(n) for n in entry["shape"]]
    except (KeyError, TypeError, ValueError):
        raise malformed("an output without name, datatype and shape", entry) from None
