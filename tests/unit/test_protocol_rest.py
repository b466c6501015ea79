"""KServe v2 REST bodies: decoding, request validation, response encoding, and wire compatibility with
``tritonclient.http`` (its request bodies parsed here, our responses parsed by it), all without a server."""

from __future__ import annotations

import gzip
import json
import re
import tracemalloc
import zlib
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient

from pybind_serve.config import ModelConfig
from pybind_serve.dtypes import serialize_bytes
from pybind_serve.errors import (
    BatchTooLargeError,
    InvalidInputError,
    OutputValidationError,
    PayloadTooLargeError,
)
from pybind_serve.protocol.messages import InferRequest, RequestedOutput
from pybind_serve.protocol.rest import decode_body, encode_error, encode_infer_response, parse_infer_request
from pybind_serve.spec import ModelSpec
from pybind_serve.tensor import Tensor

DTYPES = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}


def make_spec(
    inputs: tuple[Tensor, ...] = (Tensor("x", np.float32, (3,)),),
    outputs: tuple[Tensor, ...] = (Tensor("y", np.float32, (3,)),),
    *,
    batching: bool = True,
    max_batch_size: int = 64,
) -> ModelSpec:
    return ModelSpec("add", 1, inputs, outputs, ModelConfig(batching=batching, max_batch_size=max_batch_size))


SPEC = make_spec()
TWO_IN = make_spec((Tensor("a", np.float32, (2,)), Tensor("b", np.int64, (2,))))


def sample(datatype: str, shape: tuple[int, ...]) -> np.ndarray:
    count = int(np.prod(shape))
    if datatype == "BYTES":
        return np.array([f"é{i}".encode() for i in range(count)], dtype=object).reshape(shape)
    if datatype == "BOOL":
        return (np.arange(count) % 2 == 0).reshape(shape)
    return np.arange(count).astype(DTYPES[datatype]).reshape(shape)


def x_input(**fields: Any) -> dict[str, Any]:
    return {"name": "x", "shape": [2, 3], "datatype": "FP32", **fields}


def parse(document: dict[str, Any], *binary: bytes, spec: ModelSpec = SPEC) -> InferRequest:
    header = json.dumps(document).encode()
    return parse_infer_request(header + b"".join(binary), len(header) if binary else None, spec)


def triton_body(inputs: list[httpclient.InferInput], **kwargs: Any) -> tuple[bytes, int | None]:
    body, header_length = httpclient.InferenceServerClient.generate_request_body(inputs, **kwargs)
    return body, header_length


def triton_input(name: str, array: np.ndarray, datatype: str, binary: bool) -> httpclient.InferInput:
    infer_input = httpclient.InferInput(name, list(array.shape), datatype)
    infer_input.set_data_from_numpy(array, binary_data=binary)
    return infer_input


def triton_result(spec: ModelSpec, request: InferRequest, outputs: dict[str, np.ndarray]) -> Any:
    body, header_length = encode_infer_response(spec, request, outputs)
    return httpclient.InferenceServerClient.parse_response_body(body, header_length=header_length)


# decode_body ------------------------------------------------------------------------------------------------

PAYLOAD = b'{"inputs": []}' * 100


@pytest.mark.parametrize("encoding", [None, "identity", "", "IDENTITY"])
def test_decode_body_identity_returns_the_body_itself(encoding: str | None) -> None:
    assert decode_body(PAYLOAD, encoding, 10_000) is PAYLOAD


def test_decode_body_identity_over_the_limit_is_too_large() -> None:
    with pytest.raises(PayloadTooLargeError, match=r"request body of 1400 bytes exceeds max_body_bytes 1000"):
        decode_body(PAYLOAD, None, 1000)


def raw_deflate(data: bytes) -> bytes:
    deflater = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return deflater.compress(data) + deflater.flush()


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        (" GZip ", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", raw_deflate),
    ],
    ids=["gzip", "x-gzip", "gzip-case", "deflate-zlib", "deflate-raw"],
)
def test_decode_body_decompresses(encoding: str, compress: Any) -> None:
    assert decode_body(compress(PAYLOAD), encoding, len(PAYLOAD)) == PAYLOAD


def test_decode_body_reads_every_gzip_member() -> None:
    assert decode_body(gzip.compress(b"ab") + gzip.compress(b"cd"), "gzip", 100) == b"abcd"


def test_decode_body_rejects_an_unknown_encoding() -> None:
    with pytest.raises(InvalidInputError, match=r"unsupported Content-Encoding 'br'; use gzip, deflate or identity"):
        decode_body(PAYLOAD, "br", 10_000)


@pytest.mark.parametrize(
    ("encoding", "body", "message"),
    [
        ("gzip", b"not gzip at all", r"corrupt compressed request body: Error -3"),
        ("gzip", gzip.compress(PAYLOAD)[:-10], r"compressed stream is cut short"),
        ("deflate", zlib.compress(PAYLOAD) + b"junk", r"4 bytes after the end of the stream"),
        ("gzip", gzip.compress(PAYLOAD) + b"junk", r"corrupt compressed request body"),
    ],
    ids=["garbage", "truncated", "deflate-trailing", "gzip-trailing"],
)
def test_decode_body_rejects_corrupt_data(encoding: str, body: bytes, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        decode_body(body, encoding, 10_000)


@pytest.mark.parametrize(
    ("encoding", "compress"), [("gzip", gzip.compress), ("deflate", zlib.compress), ("deflate", raw_deflate)]
)
def test_decode_body_stops_a_zip_bomb_at_the_limit(encoding: str, compress: Any) -> None:
    bomb = compress(bytes(50_000_000))  # 50 MB of zeros in ~50 KB
    limit = 1_000_000
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLargeError, match=r"decompressed request body exceeds max_body_bytes 1000000"):
            decode_body(bomb, encoding, limit)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * limit


def test_decode_body_accepts_exactly_the_limit() -> None:
    assert len(decode_body(gzip.compress(bytes(1000)), "gzip", 1000)) == 1000


# parse_infer_request: framing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("header_length", [-1, 10_000, True])
def test_parse_rejects_a_bad_header_length(header_length: int) -> None:
    body = json.dumps({"inputs": [x_input(data=[0] * 6)]}).encode()
    with pytest.raises(InvalidInputError, match=r"Inference-Header-Content-Length .* must be an int in 0\.\.\d+"):
        parse_infer_request(body, header_length, SPEC)


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe", b""])
def test_parse_rejects_malformed_json(body: bytes) -> None:
    with pytest.raises(InvalidInputError, match=r"^malformed JSON: "):
        parse_infer_request(body, None, SPEC)


def test_parse_rejects_a_json_value_that_is_not_an_object() -> None:
    with pytest.raises(InvalidInputError, match=r"the request must be a JSON object, got list"):
        parse_infer_request(b"[1, 2]", None, SPEC)


@pytest.mark.parametrize("inputs", [None, {"x": 1}])
def test_parse_needs_an_inputs_list(inputs: Any) -> None:
    document = {} if inputs is None else {"inputs": inputs}
    with pytest.raises(InvalidInputError, match=r"a request for model 'add' v1 needs an 'inputs' list, got"):
        parse(document)


def test_parse_rejects_an_input_that_is_not_an_object() -> None:
    with pytest.raises(InvalidInputError, match=r"each entry of 'inputs' must be a JSON object, got str"):
        parse({"inputs": ["x"]})


# parse_infer_request: JSON data ------------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", DTYPES)
def test_parse_json_data_of_every_datatype(datatype: str) -> None:
    expected = sample(datatype, (2, 3))
    spec = make_spec((Tensor("x", DTYPES[datatype], (3,)),))
    data = [v.decode() for v in expected.ravel()] if datatype == "BYTES" else expected.ravel().tolist()
    request = parse({"inputs": [{"name": "x", "shape": [2, 3], "datatype": datatype, "data": data}]}, spec=spec)
    array = request.inputs["x"]
    assert array.dtype == expected.dtype and array.shape == (2, 3)
    assert array.tolist() == expected.tolist()
    assert request.rows == 2


def test_parse_json_data_may_be_nested() -> None:
    request = parse({"inputs": [x_input(data=[[1, 2, 3], [4.5, 5, 6]])]})
    np.testing.assert_array_equal(request.inputs["x"], np.array([[1, 2, 3], [4.5, 5, 6]], np.float32))


def test_parse_nested_bytes_keep_trailing_nul_characters() -> None:
    spec = make_spec((Tensor("x", bytes, (2,)),))
    request = parse(
        {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "BYTES", "data": [["a\x00", ""]]}]}, spec=spec
    )
    assert request.inputs["x"].tolist() == [[b"a\x00", b""]]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2, 3], r"'data' holds 3 elements but shape \[2, 3\] needs 6"),
        ([[1, 2, 3], [4, 5]], r"'data' is not a regular nested list"),
        (["1", "2", "3", "4", "5", "6"], r"FP32 'data' must hold numbers, got strings"),
        ([1, 2, None, 4, 5, 6], r"FP32 'data' must hold numbers, got mixed values"),
        ({"a": 1}, r"'data' must be a JSON list, got dict"),
    ],
    ids=["count", "ragged", "strings", "null", "not-a-list"],
)
def test_parse_rejects_bad_json_data(data: Any, message: str) -> None:
    with pytest.raises(InvalidInputError, match=r"^input 'x' of model 'add' v1: " + message):
        parse({"inputs": [x_input(data=data)]})


@pytest.mark.parametrize(
    ("datatype", "data", "message"),
    [
        ("INT32", [1.5, 2], r"INT32 'data' must hold integers, got floats"),
        ("BOOL", [1, 0], r"BOOL 'data' must hold true/false, got integers"),
        ("INT8", [1, 300], r"INT8 'data' holds 300, out of range"),
        ("UINT8", [-1, 3], r"UINT8 'data' holds -1, out of range"),
        ("BYTES", ["a", 1], r"BYTES 'data' must hold strings, got int 1"),
        ("BYTES", ["\udc80", "a"], r"BYTES 'data' holds a string that is not valid UTF-8"),
    ],
)
def test_parse_rejects_json_values_of_the_wrong_kind(datatype: str, data: list[Any], message: str) -> None:
    spec = make_spec((Tensor("x", DTYPES[datatype], (2,)),))
    with pytest.raises(InvalidInputError, match=message):
        parse({"inputs": [{"name": "x", "shape": [1, 2], "datatype": datatype, "data": data}]}, spec=spec)


def test_parse_accepts_json_ints_for_floats_and_empty_data() -> None:
    spec = make_spec((Tensor("x", np.float16, (-1,)),))
    assert (
        parse({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP16", "data": [1, 2]}]}, spec=spec)
        .inputs["x"]
        .dtype
        == np.float16
    )
    empty = parse({"inputs": [{"name": "x", "shape": [1, 0], "datatype": "FP16", "data": []}]}, spec=spec)
    assert empty.inputs["x"].shape == (1, 0) and empty.inputs["x"].dtype == np.float16


# parse_infer_request: binary data ----------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", DTYPES)
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_parse_every_datatype_as_tritonclient_sends_it(datatype: str, binary: bool) -> None:
    expected = sample(datatype, (2, 3))
    spec = make_spec((Tensor("x", DTYPES[datatype], (3,)),))
    body, header_length = triton_body([triton_input("x", expected, datatype, binary)])
    assert (header_length is not None) == binary
    array = parse_infer_request(body, header_length, spec).inputs["x"]
    assert array.dtype == expected.dtype and array.shape == (2, 3)
    assert array.tolist() == expected.tolist()


def test_parse_binary_inputs_are_read_only_views_into_the_body() -> None:
    expected = np.arange(6, dtype=np.float32).reshape(2, 3)
    body, header_length = triton_body([triton_input("x", expected, "FP32", binary=True)])
    array = parse_infer_request(body, header_length, SPEC).inputs["x"]
    assert np.shares_memory(array, np.frombuffer(body, np.uint8))
    assert not array.flags.writeable


def test_parse_mixed_json_and_binary_inputs_in_order() -> None:
    spec = make_spec((Tensor("a", np.float32, (2,)), Tensor("b", bytes, (1,)), Tensor("c", np.int64, (2,))))
    a = np.array([[1, 2]], np.float32)
    b = np.array([[b"\x00\xffraw"]], dtype=object)
    c = np.array([[7, 8]], np.int64)
    inputs = [
        triton_input("a", a, "FP32", True),
        triton_input("c", c, "INT64", False),
        triton_input("b", b, "BYTES", True),
    ]
    request = parse_infer_request(*triton_body(inputs), spec)
    assert request.inputs["a"].tolist() == a.tolist()
    assert request.inputs["b"].tolist() == [[b"\x00\xffraw"]]
    assert request.inputs["c"].tolist() == c.tolist()


@pytest.mark.parametrize(
    ("size", "binary", "message"),
    [
        (20, bytes(20), r"binary data holds 20 bytes but FP32 \[2, 3\] needs 24"),
        (24, bytes(10), r"binary_data_size is 24 but only 10 bytes of binary data remain"),
        (-4, bytes(24), r"binary_data_size must be an int >= 0, got -4"),
        ("24", bytes(24), r"binary_data_size must be an int >= 0, got '24'"),
    ],
    ids=["wrong-size", "too-few", "negative", "string"],
)
def test_parse_rejects_bad_binary_sizes(size: Any, binary: bytes, message: str) -> None:
    with pytest.raises(InvalidInputError, match=r"^input 'x' of model 'add' v1: " + message):
        parse({"inputs": [x_input(parameters={"binary_data_size": size})]}, binary)


def test_parse_rejects_bytes_left_after_the_binary_inputs() -> None:
    with pytest.raises(InvalidInputError, match=r"request for model 'add' v1 has 4 bytes of binary data after its"):
        parse({"inputs": [x_input(parameters={"binary_data_size": 24})]}, bytes(28))


def test_parse_rejects_binary_data_when_no_input_claims_it() -> None:
    with pytest.raises(InvalidInputError, match=r"has 3 bytes of binary data after its inputs"):
        parse({"inputs": [x_input(data=[0] * 6)]}, b"abc")


def test_parse_rejects_broken_bytes_framing_naming_the_input() -> None:
    spec = make_spec((Tensor("x", bytes, (2,)),))
    framed = serialize_bytes(np.array([b"ab"], dtype=object))
    document = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "BYTES", "parameters": {"binary_data_size": 6}}]}
    with pytest.raises(InvalidInputError, match=r"^input 'x' of model 'add' v1: BYTES data holds fewer than the 2"):
        parse(document, framed, spec=spec)


def test_parse_rejects_an_input_with_both_data_and_binary() -> None:
    entry = x_input(data=[0] * 6, parameters={"binary_data_size": 24})
    with pytest.raises(InvalidInputError, match=r"'x' .*give only one of 'data' or parameters\.binary_data_size"):
        parse({"inputs": [entry]}, bytes(24))


def test_parse_rejects_an_input_with_neither_data_nor_binary() -> None:
    with pytest.raises(InvalidInputError, match=r"'x' .*give either 'data' or parameters\.binary_data_size"):
        parse({"inputs": [x_input()]})


def test_parse_rejects_shared_memory_inputs_when_the_extension_is_off() -> None:
    entry = x_input(parameters={"shared_memory_region": "r", "shared_memory_byte_size": 24})
    with pytest.raises(
        InvalidInputError, match=r"input 'x' of model 'add' v1: input 'x' names shared memory region 'r', but system "
    ):
        parse({"inputs": [entry]})


@pytest.mark.parametrize("parameters", [[1], [], "binary"])
def test_parse_rejects_input_parameters_that_are_not_an_object(parameters: Any) -> None:
    with pytest.raises(InvalidInputError, match=r"^input 'x' of model 'add' v1: 'parameters' must be a JSON object"):
        parse({"inputs": [x_input(data=[0] * 6, parameters=parameters)]})


def test_parse_accepts_null_input_parameters() -> None:
    assert parse({"inputs": [x_input(data=[0] * 6, parameters=None)]}).inputs["x"].shape == (2, 3)


# parse_infer_request: names, datatypes, shapes, batches ------------------------------------------------------


def test_parse_rejects_duplicate_inputs() -> None:
    with pytest.raises(InvalidInputError, match=r"^input 'x' of model 'add' v1 is given twice$"):
        parse({"inputs": [x_input(data=[0] * 6), x_input(data=[0] * 6)]})


def test_parse_rejects_an_unknown_input_listing_the_expected_ones() -> None:
    entry = {"name": "z", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}
    with pytest.raises(InvalidInputError, match=r"^model 'add' v1 has no input 'z'; expected inputs: 'a', 'b'$"):
        parse({"inputs": [entry]}, spec=TWO_IN)


def test_parse_rejects_missing_required_inputs() -> None:
    with pytest.raises(InvalidInputError, match=r"^model 'add' v1: missing required inputs 'a', 'b'$"):
        parse({"inputs": []}, spec=TWO_IN)
    entry = {"name": "a", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}
    with pytest.raises(InvalidInputError, match=r"^model 'add' v1: missing required input 'b'$"):
        parse({"inputs": [entry]}, spec=TWO_IN)


def test_parse_allows_leaving_out_optional_inputs() -> None:
    spec = make_spec((Tensor("x", np.float32, (3,)), Tensor("mask", np.bool_, (3,), optional=True)))
    request = parse({"inputs": [x_input(data=[0] * 6)]}, spec=spec)
    assert list(request.inputs) == ["x"]


def test_parse_datatype_mismatch_names_expected_and_got() -> None:
    spec = make_spec((Tensor("x", np.float32, (3,)),))
    entry = {"name": "x", "shape": [2, 3], "datatype": "INT64", "data": [0] * 6}
    with pytest.raises(
        InvalidInputError, match=r"^input 'x' of model 'add' v1: expected FP32 shape \[-1, 3\], got INT64 \[2, 3\]$"
    ):
        parse({"inputs": [entry]}, spec=spec)


BATCH_DIM = re.escape(" (the first dim is the batch size: the model batches, up to 64 rows")


@pytest.mark.parametrize(
    ("shape", "got"),
    [
        ([2, 4], r"\[2, 4\]" + BATCH_DIM + r"\)"),
        ([3], r"\[3\]" + BATCH_DIM + re.escape("; one sample of shape [3] is sent as [1, 3])")),
        ([], r"\[\]" + BATCH_DIM + r"\)"),
        ([2, 1, 3], r"\[2, 1, 3\]" + BATCH_DIM + r"\)"),
    ],
)
def test_parse_shape_mismatch_with_batching_says_the_first_dim_is_the_batch(shape: list[int], got: str) -> None:
    spec = make_spec((Tensor("x", np.float32, (3,)),))
    entry = {"name": "x", "shape": shape, "datatype": "FP32", "data": []}
    with pytest.raises(InvalidInputError, match=r"expected FP32 shape \[-1, 3\], got FP32 " + got + "$"):
        parse({"inputs": [entry]}, spec=spec)


def test_a_shape_with_a_batch_dim_for_a_model_that_does_not_batch_says_so() -> None:
    spec = make_spec((Tensor("x", np.float32, (3,)),), batching=False)
    entry = {"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [0] * 3}
    expected = "expected FP32 shape [3], got FP32 [1, 3] (the model does not batch: no batch dimension, e.g. [3])"
    with pytest.raises(InvalidInputError, match=re.escape(expected) + "$"):
        parse({"inputs": [entry]}, spec=spec)


def test_parse_without_batching_takes_the_shape_as_is() -> None:
    spec = make_spec((Tensor("x", np.float32, (-1, 3)),), batching=False)
    request = parse({"inputs": [x_input(shape=[100, 3], data=[0] * 300)]}, spec=spec)
    assert request.rows == 1 and request.inputs["x"].shape == (100, 3)
    with pytest.raises(
        InvalidInputError, match=r"^input 'x' of model 'add' v1: expected FP32 shape \[-1, 3\], got FP32 \[3\]$"
    ):
        parse({"inputs": [x_input(shape=[3], data=[0] * 3)]}, spec=spec)


@pytest.mark.parametrize("shape", [[-1, 3], [2.0, 3], [True, 3], "2,3", None])
def test_parse_rejects_shapes_that_are_not_lists_of_non_negative_ints(shape: Any) -> None:
    with pytest.raises(
        InvalidInputError, match=r"^input 'x' of model 'add' v1: shape must be a list of ints >= 0, got"
    ):
        parse({"inputs": [x_input(shape=shape, data=[0] * 6)]})


def test_parse_rejects_a_batch_over_max_batch_size() -> None:
    with pytest.raises(
        BatchTooLargeError, match=r"^input 'x' of model 'add' v1: batch size 80 exceeds max_batch_size 64$"
    ):
        parse({"inputs": [x_input(shape=[80, 3], data=[0] * 240)]})


def test_parse_accepts_a_batch_of_exactly_max_batch_size() -> None:
    assert parse({"inputs": [x_input(shape=[64, 3], data=[0] * 192)]}).rows == 64


def test_parse_rejects_an_empty_batch() -> None:
    with pytest.raises(InvalidInputError, match=r"^input 'x' of model 'add' v1: batch size must be at least 1, got 0$"):
        parse({"inputs": [x_input(shape=[0, 3], data=[])]})


def test_parse_rejects_inputs_with_different_batch_sizes() -> None:
    inputs = [
        {"name": "a", "shape": [2, 2], "datatype": "FP32", "data": [0] * 4},
        {"name": "b", "shape": [3, 2], "datatype": "INT64", "data": [0] * 6},
    ]
    with pytest.raises(
        InvalidInputError, match=r"^input 'b' of model 'add' v1: batch size 3 differs from 2 of input 'a'"
    ):
        parse({"inputs": inputs}, spec=TWO_IN)


# parse_infer_request: id, parameters, outputs ---------------------------------------------------------------


def test_parse_reads_id_priority_timeout_and_custom_parameters() -> None:
    parameters = {"priority": 2, "timeout": 5000, "binary_data_output": True, "scale": 0.5, "mode": "fast"}
    request = parse({"id": "r-1", "inputs": [x_input(data=[0] * 6)], "parameters": parameters})
    assert (request.id, request.priority, request.timeout_us, request.binary_output) == ("r-1", 2, 5000, True)
    assert request.parameters == {"scale": 0.5, "mode": "fast"}
    assert (request.model, request.version) == ("add", 1)


def test_parse_defaults_without_parameters() -> None:
    request = parse({"inputs": [x_input(data=[0] * 6)]})
    assert (request.id, request.priority, request.timeout_us, request.binary_output) == ("", 0, 0, False)
    assert request.parameters == {} and request.outputs is None


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"priority": -1}, r"parameter 'priority' must be an int >= 0, got -1"),
        ({"priority": "high"}, r"parameter 'priority' must be an int >= 0, got 'high'"),
        ({"priority": True}, r"parameter 'priority' must be an int >= 0, got True"),
        ({"timeout": 1.5}, r"parameter 'timeout' must be an int >= 0, got 1\.5"),
        ({"binary_data_output": 1}, r"parameter 'binary_data_output' must be true or false, got 1"),
    ],
)
def test_parse_rejects_bad_reserved_parameters(parameters: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse({"inputs": [x_input(data=[0] * 6)], "parameters": parameters})


def test_parse_rejects_parameters_that_are_not_an_object() -> None:
    with pytest.raises(InvalidInputError, match=r"request 'parameters' must be a JSON object, got \[\]"):
        parse({"inputs": [x_input(data=[0] * 6)], "parameters": []})


def test_parse_rejects_a_non_string_id() -> None:
    with pytest.raises(InvalidInputError, match=r"request 'id' must be a string, got 7"):
        parse({"id": 7, "inputs": [x_input(data=[0] * 6)]})


@pytest.mark.parametrize(
    "parameters", [{"sequence_id": 5}, {"sequence_id": "s1"}, {"sequence_id": 0, "sequence_start": True}]
)
def test_parse_rejects_sequence_requests(parameters: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError, match=r"^model 'add' v1 does not support sequence batching \(parameter"):
        parse({"inputs": [x_input(data=[0] * 6)], "parameters": parameters})


def test_parse_drops_idle_sequence_and_triton_internal_parameters() -> None:
    parameters = {"sequence_id": 0, "sequence_start": False, "sequence_end": False, "triton_x": 1, "keep": 2}
    assert parse({"inputs": [x_input(data=[0] * 6)], "parameters": parameters}).parameters == {"keep": 2}


def test_parse_reads_requested_outputs() -> None:
    spec = make_spec(outputs=(Tensor("y", np.float32, (3,)), Tensor("z", np.float32, (3,)), Tensor("w", bytes, (1,))))
    outputs = [{"name": "z", "parameters": {"binary_data": True}}, {"name": "y"}, {"name": "w", "parameters": {}}]
    request = parse({"inputs": [x_input(data=[0] * 6)], "outputs": outputs}, spec=spec)
    assert request.outputs == (RequestedOutput("z", True), RequestedOutput("y", None), RequestedOutput("w", None))


def test_parse_treats_an_empty_outputs_list_as_all_outputs() -> None:
    assert parse({"inputs": [x_input(data=[0] * 6)], "outputs": []}).outputs is None


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        ([{"name": "nope"}], r"^model 'add' v1 has no output 'nope'; known outputs: 'y'$"),
        ([{}], r"^model 'add' v1 has no output None; known outputs: 'y'$"),
        ([{"name": "y"}, {"name": "y"}], r"^output 'y' of model 'add' v1 is requested twice$"),
        (
            [{"name": "y", "parameters": {"classification": 3}}],
            r"^output 'y' .*classification extension is not supported$",
        ),
        ([{"name": "y", "parameters": {"binary_data": "yes"}}], r"'binary_data' must be true or false, got 'yes'"),
        ([{"name": "y", "parameters": {"shared_memory_region": "r"}}], r"'shared_memory_byte_size' is required"),
        (
            [{"name": "y", "parameters": {"shared_memory_region": "r", "shared_memory_byte_size": 8}}],
            r"^model 'add' v1: output 'y' names shared memory region 'r', but system shared memory is off",
        ),
        ([{"name": "y", "parameters": 1}], r"^output 'y' of model 'add' v1: 'parameters' must be a JSON object"),
        ({"name": "y"}, r"request 'outputs' must be a list, got dict"),
    ],
    ids=["unknown", "no-name", "twice", "classification", "binary-type", "shm", "shm-off", "params-type", "not-list"],
)
def test_parse_rejects_bad_requested_outputs(outputs: Any, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse({"inputs": [x_input(data=[0] * 6)], "outputs": outputs})


# encode_infer_response ---------------------------------------------------------------------------------------


def request_for(spec: ModelSpec = SPEC, **fields: Any) -> InferRequest:
    return InferRequest(model=spec.name, version=spec.version, inputs={}, **fields)


def test_encode_pure_json_response() -> None:
    y = np.array([[1.5, 2, 3]], np.float32)
    body, header_length = encode_infer_response(SPEC, request_for(id="r-9"), {"y": y})
    assert header_length is None
    assert json.loads(body) == {
        "model_name": "add",
        "model_version": "1",
        "id": "r-9",
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 3], "data": [1.5, 2.0, 3.0]}],
    }


def test_encode_binary_response_layout() -> None:
    y = np.arange(6, dtype=np.float32).reshape(2, 3)
    body, header_length = encode_infer_response(SPEC, request_for(binary_output=True), {"y": y})
    assert header_length is not None
    header = json.loads(body[:header_length])
    assert "id" not in header
    assert header["outputs"] == [
        {"name": "y", "datatype": "FP32", "shape": [2, 3], "parameters": {"binary_data_size": 24}}
    ]
    assert body[header_length:] == y.tobytes()


@pytest.mark.parametrize("datatype", DTYPES)
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_encode_every_datatype_round_trips_through_tritonclient(datatype: str, binary: bool) -> None:
    spec = make_spec(outputs=(Tensor("y", DTYPES[datatype], (3,)),))
    expected = sample(datatype, (2, 3))
    result = triton_result(spec, request_for(spec, binary_output=binary), {"y": expected})
    got = result.as_numpy("y")
    assert got.shape == (2, 3)
    if datatype == "BYTES" and not binary:  # tritonclient gives JSON strings back as str
        assert got.tolist() == [[v.decode() for v in row] for row in expected.tolist()]
    else:
        assert got.dtype == expected.dtype and got.tolist() == expected.tolist()


def test_encode_json_values_are_plain_json_types() -> None:
    spec = make_spec(outputs=(Tensor("h", np.float16, (2,)), Tensor("b", np.bool_, (2,)), Tensor("s", bytes, (2,))))
    outputs = {
        "h": np.array([[0.5, 1]], np.float16),
        "b": np.array([[True, False]]),
        "s": np.array([["x", b"y"]], dtype=object),
    }
    body, _ = encode_infer_response(spec, request_for(spec), outputs)
    data = {out["name"]: out["data"] for out in json.loads(body)["outputs"]}
    assert data == {"h": [0.5, 1.0], "b": [True, False], "s": ["x", "y"]}


def test_encode_non_utf8_bytes_as_json_tells_the_client_to_ask_for_binary() -> None:
    spec = make_spec(outputs=(Tensor("s", bytes, (1,)),))
    with pytest.raises(
        OutputValidationError,
        match=r"^output 's' of model 'add' v1: BYTES element 1 is not valid UTF-8.*binary_data=true",
    ):
        encode_infer_response(spec, request_for(spec), {"s": np.array([[b"ok"], [b"\xff"]], dtype=object)})
    body, header_length = encode_infer_response(
        spec, request_for(spec, binary_output=True), {"s": np.array([[b"\xff"]], dtype=object)}
    )
    assert body[header_length:] == b"\x01\x00\x00\x00\xff"


def test_encode_selects_requested_outputs_in_request_order_with_per_output_binary() -> None:
    spec = make_spec(outputs=(Tensor("y", np.float32, (3,)), Tensor("z", np.int32, (1,)), Tensor("w", np.int8, (1,))))
    outputs: dict[str, np.ndarray] = {
        "y": np.ones((1, 3), np.float32),
        "z": np.array([[7]], np.int32),
        "w": np.array([[1]], np.int8),
    }
    wanted = (RequestedOutput("z", False), RequestedOutput("y", None))
    body, header_length = encode_infer_response(spec, request_for(spec, outputs=wanted, binary_output=True), outputs)
    assert header_length is not None
    header = json.loads(body[:header_length])
    assert [o["name"] for o in header["outputs"]] == ["z", "y"]
    assert header["outputs"][0]["data"] == [7]
    assert header["outputs"][1]["parameters"] == {"binary_data_size": 12}
    assert body[header_length:] == outputs["y"].tobytes()


def test_encode_all_declared_outputs_present_in_spec_order() -> None:
    spec = make_spec(
        outputs=(Tensor("y", np.float32, (1,)), Tensor("z", np.float32, (1,)), Tensor("w", np.float32, (1,)))
    )
    outputs: dict[str, np.ndarray] = {
        "w": np.zeros((1, 1), np.float32),
        "extra": np.zeros(1),
        "y": np.zeros((1, 1), np.float32),
    }
    body, _ = encode_infer_response(spec, request_for(spec), outputs)
    assert [o["name"] for o in json.loads(body)["outputs"]] == ["y", "w"]


def test_encode_a_requested_output_the_model_did_not_return_is_an_output_error() -> None:
    request = request_for(outputs=(RequestedOutput("y"),))
    with pytest.raises(OutputValidationError, match=r"^output 'y' of model 'add' v1 was requested but not returned$"):
        encode_infer_response(SPEC, request, {})


def test_encode_body_does_not_keep_a_view_of_the_outputs() -> None:
    y = np.ones((1, 3), np.float32)
    body, header_length = encode_infer_response(SPEC, request_for(binary_output=True), {"y": y})
    y[:] = 7
    assert np.frombuffer(body[header_length:], np.float32).tolist() == [1, 1, 1]


def test_encode_converts_non_contiguous_and_big_endian_arrays() -> None:
    y = np.arange(12, dtype=">f4").reshape(3, 4)[:, 1:]
    body, header_length = encode_infer_response(SPEC, request_for(binary_output=True), {"y": y})
    assert header_length is not None
    np.testing.assert_array_equal(np.frombuffer(body[header_length:], "<f4").reshape(3, 3), y)


def test_encode_empty_tensor() -> None:
    spec = make_spec(outputs=(Tensor("y", np.float32, (-1,)),))
    result = triton_result(spec, request_for(spec, binary_output=True), {"y": np.zeros((1, 0), np.float32)})
    assert result.as_numpy("y").shape == (1, 0)


def test_encode_error_body() -> None:
    assert json.loads(encode_error("input 'x' of model 'add' v1: \"bad\"")) == {
        "error": "input 'x' of model 'add' v1: \"bad\""
    }


# wire compatibility: a full tritonclient round trip ----------------------------------------------------------


@pytest.mark.parametrize("binary_out", [True, False], ids=["binary-out", "json-out"])
def test_tritonclient_round_trip(binary_out: bool) -> None:
    spec = make_spec(
        (Tensor("a", np.float32, (2,)), Tensor("text", bytes, (1,))),
        (Tensor("sum", np.float32, (2,)), Tensor("echo", bytes, (1,))),
        max_batch_size=8,
    )
    a = np.array([[1, 2], [3, 4]], np.float32)
    text = np.array([[b"hi"], [b"there"]], dtype=object)
    inputs = [triton_input("a", a, "FP32", True), triton_input("text", text, "BYTES", False)]
    outputs = [httpclient.InferRequestedOutput("sum", binary_data=binary_out), httpclient.InferRequestedOutput("echo")]
    body, header_length = triton_body(
        inputs, outputs=outputs, request_id="42", priority=1, timeout=1000, parameters={"scale": 2}
    )
    request = parse_infer_request(body, header_length, spec)
    assert (request.rows, request.id, request.priority, request.timeout_us) == (2, "42", 1, 1000)
    assert request.parameters == {"scale": 2}
    assert request.outputs == (RequestedOutput("sum", binary_out), RequestedOutput("echo", True))

    result_outputs = {"sum": request.inputs["a"] * request.parameters["scale"], "echo": request.inputs["text"]}
    result = triton_result(spec, request, result_outputs)
    assert result.get_response()["id"] == "42"
    np.testing.assert_array_equal(result.as_numpy("sum"), a * 2)
    assert result.as_numpy("echo").tolist() == text.tolist()


def test_tritonclient_default_request_asks_for_binary_outputs() -> None:
    body, header_length = triton_body([triton_input("x", np.ones((1, 3), np.float32), "FP32", False)])
    request = parse_infer_request(body, header_length, SPEC)
    assert header_length is None and request.binary_output and request.outputs is None
    response, response_header_length = encode_infer_response(SPEC, request, {"y": request.inputs["x"] + 1})
    assert response_header_length is not None
    result = httpclient.InferenceServerClient.parse_response_body(response, header_length=response_header_length)
    np.testing.assert_array_equal(result.as_numpy("y"), np.full((1, 3), 2, np.float32))
