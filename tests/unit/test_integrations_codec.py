"""The client side of the KServe v2 REST wire (`pybind_serve.integrations.codec`) against the server side
(`pybind_serve.protocol.rest`): what one encodes the other reads, and every bad answer is an error of ours."""

from __future__ import annotations

import json

import numpy as np
import pytest

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
from pybind_serve.integrations.codec import conform_inputs, decode_metadata, decode_response, encode_request
from pybind_serve.protocol.messages import ModelSpec
from pybind_serve.protocol.rest import encode_infer_response, parse_infer_request
from pybind_serve.tensor import Tensor

SPEC = ModelSpec(
    "m",
    1,
    (Tensor("x", np.float32, (2,)), Tensor("s", bytes, (1,))),
    (Tensor("y", np.int64, (2,)), Tensor("t", bytes, (1,))),
    ModelConfig(max_batch_size=8),
)


def test_the_server_reads_what_the_client_encodes() -> None:
    x, s = np.array([[1.5, -2]], dtype=np.float32), np.array([[b"h\xc3\xa9"]], dtype=object)
    body, header_length = encode_request({"x": x, "s": s}, {"priority": 1, "factor": 2.5}, ["y"])
    request = parse_infer_request(body, header_length, SPEC)
    assert request.inputs["x"].tolist() == x.tolist() and request.inputs["s"].tolist() == [[b"h\xc3\xa9"]]
    assert request.parameters == {"factor": 2.5} and request.priority == 1
    assert request.binary_output and [o.name for o in request.outputs or ()] == ["y"]


def test_the_client_reads_what_the_server_answers() -> None:
    body, header_length = encode_request({"x": np.zeros((2, 2), np.float32), "s": np.array([[b"a"], [b"b"]])})
    request = parse_infer_request(body, header_length, SPEC)
    outputs = {"y": np.array([[1, 2], [3, 4]]), "t": np.array([[b"p"], [b""]], dtype=object)}
    answer, answer_header_length = encode_infer_response(SPEC, request, outputs)
    decoded = decode_response(200, bytearray(answer), answer_header_length)
    assert decoded["y"].dtype == np.int64 and decoded["y"].tolist() == [[1, 2], [3, 4]]
    assert decoded["y"].flags.writeable
    assert decoded["t"].tolist() == [[b"p"], [b""]]


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
        decode_response(status, json.dumps({"error": "model 'm' v1: no"}).encode(), None)
    assert str(raised.value) == "model 'm' v1: no"


def test_an_error_answer_that_is_not_ours_keeps_its_status_and_text() -> None:
    with pytest.raises(InferenceError, match="HTTP 502: <html>bad gateway"):
        decode_response(502, b"<html>bad gateway", None)


@pytest.mark.parametrize(
    ("body", "header_length"),
    [
        (b"not json", None),
        (b"[]", None),
        (b'{"model_name": "m"}', None),
        (b'{"outputs": [{"name": "y", "datatype": "FP32", "shape": [1]}]}', None),  # JSON data: not asked for
        (
            b'{"outputs": [{"name": "y", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}}]}X',
            100,
        ),
        (
            b'{"outputs": [{"name": "y", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}}]}',
            None,
        ),
    ],
)
def test_a_response_that_does_not_decode_is_an_internal_server_error(body: bytes, header_length: int | None) -> None:
    if header_length == 100:
        header_length = len(body) - 1
    with pytest.raises(InternalServerError, match="the server sent"):
        decode_response(200, body, header_length)


def test_inputs_are_cast_to_the_declared_datatype_where_safe_or_same_kind() -> None:
    conformed = conform_inputs(
        {"a": [[1, 2]], "b": np.ones(2), "c": np.ones(2), "d": ["x"], "e": np.ones(1)},
        {"a": "FP32", "b": "FP16", "c": "INT32", "d": "BYTES"},
    )
    assert conformed["a"].dtype == np.float32 and conformed["b"].dtype == np.float16
    assert conformed["c"].dtype == np.float64  # float -> int is not same-kind: the server says what is wrong
    assert conformed["e"].dtype == np.float64  # e is not declared
    body, header_length = encode_request({"d": conformed["d"]})  # a str array goes as BYTES, UTF-8 encoded
    assert json.loads(body[:header_length])["inputs"][0]["datatype"] == "BYTES" and body.endswith(b"\x01\0\0\0x")


def test_a_ragged_input_or_an_unsupported_dtype_is_invalid_input() -> None:
    with pytest.raises(InvalidInputError, match="input 'x' is not an array"):
        conform_inputs({"x": [[1, 2], [3]]}, {})
    with pytest.raises(InvalidInputError, match=r"input 'x'.*complex"):
        encode_request({"x": np.ones(2, dtype=np.complex64)})


def test_metadata_gives_the_input_datatypes() -> None:
    document = {"name": "m", "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}], "outputs": []}
    assert decode_metadata(200, json.dumps(document).encode()) == {"x": "FP32"}
    with pytest.raises(ModelNotFoundError, match="unknown model"):
        decode_metadata(404, b'{"error": "unknown model \'z\'"}')
    with pytest.raises(InternalServerError):
        decode_metadata(200, b'{"inputs": [{"datatype": "FP32"}]}')
