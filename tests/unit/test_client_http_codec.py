"""The client side of the KServe v2 REST wire (`pybind_serve.client.http_codec`) against the server side
(`pybind_serve.protocol.rest`): what one encodes the other reads, and every bad answer is an error of ours."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pybind_serve.client.exchange import CallOptions, HttpReply, HttpRequest, ModelRef
from pybind_serve.client.http_codec import HttpCodec, decode_infer, encode_infer
from pybind_serve.config import ModelConfig
from pybind_serve.errors import (
    InferenceError,
    InternalServerError,
    InvalidInputError,
    ModelExecutionError,
    ModelNotFoundError,
    UnavailableError,
    UnsupportedError,
)
from pybind_serve.protocol import documents
from pybind_serve.protocol.rest import encode_infer_response, parse_infer_request
from pybind_serve.spec import ModelSpec
from pybind_serve.tensor import Tensor

SPEC = ModelSpec(
    "m",
    1,
    (Tensor("x", np.float32, (2,)), Tensor("s", bytes, (1,))),
    (Tensor("y", np.int64, (2,)), Tensor("t", bytes, (1,))),
    ModelConfig(max_batch_size=8),
)
CODEC = HttpCodec()
OPTIONS = CallOptions(5.0, {"Authorization": "Bearer x"})


def reply(status: int, document: object, headers: dict[str, str] | None = None) -> HttpReply:
    return HttpReply(status, headers or {}, json.dumps(document).encode())


def test_the_server_reads_what_the_client_encodes() -> None:
    x, s = np.array([[1.5, -2]], dtype=np.float32), np.array([[b"h\xc3\xa9"]], dtype=object)
    call = CODEC.infer(ModelRef("m", "1"), {"x": x, "s": s}, {"priority": 1, "factor": 2.5}, ["y"], OPTIONS)
    request = call.request
    assert isinstance(request, HttpRequest)
    assert (request.method, request.path, request.timeout_s) == ("POST", "/v2/models/m/versions/1/infer", 5.0)
    assert request.headers["Authorization"] == "Bearer x"
    parsed = parse_infer_request(request.body, int(request.headers["Inference-Header-Content-Length"]), SPEC)
    assert parsed.inputs["x"].tolist() == x.tolist() and parsed.inputs["s"].tolist() == [[b"h\xc3\xa9"]]
    assert parsed.parameters == {"factor": 2.5} and parsed.priority == 1
    assert parsed.binary_output and [o.name for o in parsed.outputs or ()] == ["y"]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_the_client_reads_what_the_server_answers(binary: bool) -> None:
    body, header_length = encode_infer({"x": np.zeros((2, 2), np.float32), "s": np.array([[b"a"], [b"b"]])})
    request = parse_infer_request(body, header_length, SPEC)
    request.binary_output = binary  # a server may answer JSON data whatever was asked: read that too
    outputs = {"y": np.array([[1, 2], [3, 4]]), "t": np.array([[b"p"], [b""]], dtype=object)}
    answer, answer_header_length = encode_infer_response(SPEC, request, outputs)
    headers = {} if answer_header_length is None else {"Inference-Header-Content-Length": str(answer_header_length)}
    decoded = decode_infer(HttpReply(200, headers, bytearray(answer)))
    assert decoded["y"].dtype == np.int64 and decoded["y"].tolist() == [[1, 2], [3, 4]]
    assert decoded["y"].flags.writeable
    assert decoded["t"].tolist() == [[b"p"], [b""]]


def test_bytes_inputs_may_be_str_and_unsupported_dtypes_are_invalid_input() -> None:
    body, header_length = encode_infer({"d": np.array(["x"])})  # a str array goes as BYTES, UTF-8 encoded
    assert json.loads(body[:header_length])["inputs"][0]["datatype"] == "BYTES" and body.endswith(b"\x01\0\0\0x")
    with pytest.raises(InvalidInputError, match=r"input 'x'.*complex"):
        encode_infer({"x": np.ones(2, dtype=np.complex64)})


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, InvalidInputError),
        (404, ModelNotFoundError),
        (500, ModelExecutionError),
        (501, UnsupportedError),
        (503, UnavailableError),
    ],
)
def test_error_answers_raise_the_class_of_their_status(status: int, cls: type[InferenceError]) -> None:
    with pytest.raises(cls) as raised:
        decode_infer(reply(status, {"error": "model 'm' v1: no"}))
    assert str(raised.value) == "model 'm' v1: no"


def test_an_error_answer_that_is_not_ours_keeps_its_status_and_text() -> None:
    with pytest.raises(InferenceError, match="HTTP 502: <html>bad gateway"):
        decode_infer(HttpReply(502, {}, b"<html>bad gateway"))


BINARY_Y = {"name": "y", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}}


@pytest.mark.parametrize(
    ("body", "header_length", "message"),
    [
        (b"not json", None, "not JSON"),
        (b"[]", None, "JSON list"),
        (b'{"model_name": "m"}', None, "'outputs' list"),
        (b'{"outputs": [{"name": "y", "datatype": "FP32", "shape": [2]}]}', None, "does not decode"),
        (json.dumps({"outputs": [BINARY_Y]}).encode() + b"1234", "-4", "binary_data_size 8, 4 bytes left"),
        (json.dumps({"outputs": [BINARY_Y]}).encode(), None, "binary_data_size 8, 0 bytes left"),
        (b'{"outputs": [{"name": "y", "datatype": "FP32"}]}', None, "without name, datatype and shape"),
        (b"{}", "9", "Inference-Header-Content-Length '9'"),
    ],
)
def test_an_answer_that_does_not_decode_is_an_internal_server_error(
    body: bytes, header_length: str | None, message: str
) -> None:
    headers = {}
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = str(len(body) - 4) if header_length == "-4" else header_length
    with pytest.raises(InternalServerError, match=rf"the server sent .*{message}"):
        decode_infer(HttpReply(200, headers, body))


def test_an_output_of_a_datatype_the_client_cannot_carry_is_unsupported() -> None:
    document = {"outputs": [{"name": "y", "datatype": "BF16", "shape": [1], "data": [1.0]}]}
    with pytest.raises(UnsupportedError, match="output 'y' has datatype BF16"):
        decode_infer(reply(200, document))


def test_metadata_and_config_are_read_from_the_documents_the_server_answers() -> None:
    model = ModelRef("m")
    metadata = CODEC.model_metadata(model, OPTIONS)
    assert metadata.request.path == "/v2/models/m"  # type: ignore[union-attr]
    read = metadata.parse(reply(200, documents.model_metadata(SPEC)))
    assert [(t.name, t.datatype, t.shape) for t in read.inputs] == [("x", "FP32", (-1, 2)), ("s", "BYTES", (-1, 1))]
    config = CODEC.model_config(model, OPTIONS).parse(reply(200, documents.model_config(SPEC)))
    assert config.max_batch_size == 8 and config.batching and not config.decoupled
    assert config.inputs == SPEC.inputs and config.outputs == SPEC.outputs
    with pytest.raises(ModelNotFoundError, match="unknown model"):
        metadata.parse(reply(404, {"error": "unknown model 'm'"}))
    with pytest.raises(InternalServerError, match="metadata of model 'm'"):
        metadata.parse(reply(200, {"name": "m", "inputs": [{"datatype": "FP32"}]}))


@pytest.mark.parametrize(("status", "ready"), [(200, True), (404, False), (503, False), (400, False)])
def test_readiness_is_the_status(status: int, ready: bool) -> None:
    call = CODEC.model_ready(ModelRef("a b", "2"), OPTIONS)
    assert call.request.path == "/v2/models/a%20b/versions/2/ready"  # type: ignore[union-attr]
    assert call.parse(HttpReply(status, {}, b"")) is ready


@pytest.mark.parametrize("status", [404, 405, 501])
def test_load_and_unload_on_a_server_without_a_repository_are_unsupported(status: int) -> None:
    for call in (CODEC.load_model(ModelRef("m"), OPTIONS), CODEC.unload_model(ModelRef("m"), OPTIONS)):
        assert call.request.path.startswith("/v2/repository/models/m/")  # type: ignore[union-attr]
        with pytest.raises(UnsupportedError, match="repository"):
            call.parse(reply(status, {"error": "Not Found" if status != 501 else "no model repository"}))
        assert call.parse(HttpReply(200, {}, b"")) is None
