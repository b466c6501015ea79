"""Property-based fuzzing of the request parsers (hypothesis, bounded and derandomized so that CI is repeatable):
whatever bytes a client sends, the REST body decoder, the REST infer parser with its binary tensor extension, the
BYTES framing and the gRPC request decoder and parser either give a request or raise the client's error
(`InvalidInputError`, or `PayloadTooLargeError` for a body that inflates too far). Nothing else may escape: the
front would answer it as a 500."""

from __future__ import annotations

import contextlib
import gzip
import json
import zlib
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pybind_serve.client.http_codec import encode_infer
from pybind_serve.config import ModelConfig
from pybind_serve.dtypes import deserialize_bytes
from pybind_serve.errors import InvalidInputError, PayloadTooLargeError
from pybind_serve.protocol import grpc_codec, rest
from pybind_serve.protocol.proto import grpc_service_pb2 as pb
from pybind_serve.spec import ModelSpec
from pybind_serve.tensor import Tensor

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
SPEC = ModelSpec(
    "m",
    1,
    (
        Tensor("x", np.float32, (-1,)),
        Tensor("n", np.int64, (2,), optional=True),
        Tensor("s", bytes, (1,), optional=True),
    ),
    (Tensor("y", np.float32, (-1,)),),
    ModelConfig(max_batch_size=4),
)
DATATYPES = ["FP32", "FP64", "INT64", "INT8", "UINT8", "BOOL", "BYTES", "FP16", "BF16", "NOPE", ""]
NAMES = ["x", "n", "s", "y", "other", ""]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=6),
    max_leaves=30,
)
shapes = st.lists(st.integers(-3, 5), max_size=4)


def tensor_entries(binary: bool) -> st.SearchStrategy[dict[str, Any]]:
    """Input entries shaped like the protocol's, with every field free to be wrong."""
    parameters = (
        st.fixed_dictionaries({}, optional={"binary_data_size": st.integers(-4, 64)}) if binary else st.just({})
    )
    return st.fixed_dictionaries(
        {"name": st.sampled_from(NAMES), "datatype": st.sampled_from(DATATYPES), "shape": shapes},
        optional={"data": json_values, "parameters": parameters},
    )


def parses_or_refuses(body: bytes, header_length: int | None) -> None:
    try:
        request = rest.parse_infer_request(body, header_length, SPEC)
    except InvalidInputError:
        return
    assert set(request.inputs) <= {"x", "n", "s"} and "x" in request.inputs


@FUZZ
@given(st.binary(max_size=512), st.one_of(st.none(), st.integers(-2, 600)))
def test_any_body_bytes_parse_or_are_refused(body: bytes, header_length: int | None) -> None:
    parses_or_refuses(body, header_length)


@FUZZ
@given(json_values)
def test_any_json_document_parses_or_is_refused(document: Any) -> None:
    parses_or_refuses(json.dumps(document).encode(), None)


@FUZZ
@given(
    st.lists(tensor_entries(binary=False), max_size=4),
    st.fixed_dictionaries({}, optional={"parameters": json_values, "outputs": json_values, "id": json_values}),
)
def test_request_shaped_json_parses_or_is_refused(inputs: list[dict[str, Any]], rest_of: dict[str, Any]) -> None:
    parses_or_refuses(json.dumps({"inputs": inputs, **rest_of}).encode(), None)


@FUZZ
@given(st.lists(tensor_entries(binary=True), min_size=1, max_size=3), st.binary(max_size=96))
def test_binary_tensor_requests_parse_or_are_refused(inputs: list[dict[str, Any]], tail: bytes) -> None:
    header = json.dumps({"inputs": inputs}).encode()
    parses_or_refuses(header + tail, len(header))


@FUZZ
@given(st.integers(1, 4), st.integers(0, 3), st.binary(max_size=4))
def test_valid_binary_requests_round_trip(rows: int, width: int, text: bytes) -> None:
    x = np.arange(rows * width, dtype=np.float32).reshape(rows, width)
    s = np.array([[text]] * rows, dtype=object)
    body, header_length = encode_infer({"x": x, "s": s})
    request = rest.parse_infer_request(body, header_length, SPEC)
    assert request.rows == rows
    np.testing.assert_array_equal(request.inputs["x"], x)
    assert request.inputs["s"].tolist() == s.tolist()


@FUZZ
@given(st.binary(max_size=256), st.sampled_from(["gzip", "deflate", "x-gzip", "identity", "br", ""]))
def test_any_compressed_body_inflates_or_is_refused(body: bytes, encoding: str) -> None:
    try:
        inflated = rest.decode_body(body, encoding, 1024)
    except (InvalidInputError, PayloadTooLargeError):
        return
    assert len(inflated) <= 1024


@FUZZ
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=3), st.integers(0, 1200))
def test_gzip_members_inflate_to_their_concatenation_within_the_limit(parts: list[bytes], limit: int) -> None:
    body = b"".join(gzip.compress(part) for part in parts)
    whole = b"".join(parts)
    if len(whole) > limit:
        with pytest.raises(PayloadTooLargeError):
            rest.decode_body(body, "gzip", limit)
    else:
        assert bytes(rest.decode_body(body, "gzip", limit)) == whole


@FUZZ
@given(st.binary(min_size=1, max_size=3000), st.sampled_from([zlib.MAX_WBITS, -zlib.MAX_WBITS]))
def test_bodies_past_the_keep_size_are_inflated_twice_to_the_same_bytes(data: bytes, wbits: int) -> None:
    deflate = zlib.compressobj(6, zlib.DEFLATED, wbits)
    body = deflate.compress(data) + deflate.flush()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rest, "KEEP_INFLATED", 16)  # count first, then inflate into place
        assert bytes(rest.decode_body(body, "deflate", 4096)) == data


@FUZZ
@given(st.binary(max_size=128), st.lists(st.integers(0, 4), max_size=3))
def test_bytes_framing_decodes_or_is_refused(buffer: bytes, shape: list[int]) -> None:
    try:
        array = deserialize_bytes(buffer, tuple(shape))
    except InvalidInputError:
        return
    assert array.shape == tuple(shape)


@FUZZ
@given(st.binary(max_size=512))
def test_any_grpc_message_bytes_decode_or_are_refused(data: bytes) -> None:
    try:
        received = grpc_codec.decode_infer_request(data)
    except InvalidInputError:
        return
    with contextlib.suppress(InvalidInputError):
        grpc_codec.parse_infer_request(received.message, SPEC, received.raw)


@FUZZ
@given(
    st.lists(
        st.tuples(st.sampled_from(NAMES), st.sampled_from(DATATYPES), shapes, st.lists(st.floats(), max_size=4)),
        max_size=3,
    ),
    st.lists(st.binary(max_size=40), max_size=4),
)
def test_request_shaped_grpc_messages_parse_or_are_refused(
    inputs: list[tuple[str, str, list[int], list[float]]], raw: list[bytes]
) -> None:
    message = pb.ModelInferRequest(model_name="m")
    for name, datatype, shape, values in inputs:
        entry = message.inputs.add(name=name, datatype=datatype, shape=shape)
        if values:
            entry.contents.fp32_contents.extend(values)
    message.raw_input_contents.extend(raw)
    received = grpc_codec.decode_infer_request(message.SerializeToString())
    with contextlib.suppress(InvalidInputError):
        grpc_codec.parse_infer_request(received.message, SPEC, received.raw)
