"""The gRPC codec, sans I/O: every datatype in and out, raw and typed contents, and the same validation (and
messages) as the REST codec for everything the two wire formats share."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import json_format
from tritonclient.grpc import _utils as triton_grpc
from tritonclient.grpc import service_pb2 as triton_pb

from pybind_serve.config import DynamicBatcher, ModelConfig, QueuePolicy, TimeoutAction
from pybind_serve.dtypes import serialize_bytes
from pybind_serve.errors import BatchTooLargeError, InvalidInputError, OutputValidationError
from pybind_serve.protocol import documents, grpc_codec, rest
from pybind_serve.protocol.grpc_codec import (
    decode_infer_request,
    encode_infer_response,
    encode_stream_response,
    parameters_of,
    parse_infer_request,
    set_parameter,
)
from pybind_serve.protocol.messages import InferRequest, RequestedOutput
from pybind_serve.protocol.proto import grpc_service_pb2 as pb
from pybind_serve.spec import ModelSpec
from pybind_serve.tensor import Tensor
from tests.unit.test_protocol_rest import DTYPES, SPEC, TWO_IN, make_spec, sample

CONTENTS = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def spec_of(datatype: str) -> ModelSpec:
    return make_spec((Tensor("x", DTYPES[datatype], (3,)),), (Tensor("y", DTYPES[datatype], (3,)),))


def from_tritonclient(inputs: list[grpcclient.InferInput], **options: Any) -> pb.ModelInferRequest:
    """The request tritonclient.grpc sends, decoded as ours."""
    message = triton_grpc._get_inference_request(
        model_name="add",
        inputs=inputs,
        model_version="",
        request_id=options.pop("request_id", ""),
        outputs=options.pop("outputs", None),
        sequence_id=0,
        sequence_start=False,
        sequence_end=False,
        priority=options.pop("priority", 0),
        timeout=options.pop("timeout", None),
        parameters=options.pop("parameters", None),
    )
    return pb.ModelInferRequest.FromString(message.SerializeToString())


def triton_input(name: str, array: np.ndarray, datatype: str) -> grpcclient.InferInput:
    infer_input = grpcclient.InferInput(name, list(array.shape), datatype)
    infer_input.set_data_from_numpy(array)
    return infer_input


# -- every datatype, both ways ---------------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", list(DTYPES))
def test_raw_inputs_as_tritonclient_sends_them(datatype: str) -> None:
    array = sample(datatype, (2, 3))
    data = from_tritonclient([triton_input("x", array, datatype)]).SerializeToString()
    received = decode_infer_request(data)
    request = parse_infer_request(received.message, spec_of(datatype), received.raw)
    got = request.inputs["x"]
    assert (got.dtype, got.shape, request.rows) == (np.dtype(DTYPES[datatype]), (2, 3), 2)
    np.testing.assert_array_equal(got, array)
    if datatype != "BYTES":  # a view of the received bytes, not a copy
        assert not got.flags.writeable and np.shares_memory(got, np.frombuffer(data, np.uint8))
    assert parse_infer_request(pb.ModelInferRequest.FromString(data), spec_of(datatype)).inputs["x"].tolist() == (
        got.tolist()
    )


@pytest.mark.parametrize("datatype", [d for d in DTYPES if d != "FP16"])
def test_typed_contents_inputs(datatype: str) -> None:
    array = sample(datatype, (2, 3))
    message = pb.ModelInferRequest()
    tensor = message.inputs.add(name="x", datatype=datatype, shape=[2, 3])
    getattr(tensor.contents, CONTENTS[datatype]).extend(array.ravel().tolist())
    got = parse_infer_request(message, spec_of(datatype)).inputs["x"]
    assert (got.dtype, got.shape) == (np.dtype(DTYPES[datatype]), (2, 3))
    np.testing.assert_array_equal(got, array)


@pytest.mark.parametrize("datatype", list(DTYPES))
def test_outputs_go_back_raw_and_tritonclient_reads_them(datatype: str) -> None:
    array = sample(datatype, (2, 3))
    data = encode_infer_response(spec_of(datatype), InferRequest("add", 1, {}, id="r"), {"y": array})
    response = pb.ModelInferResponse.FromString(data)
    assert (response.model_name, response.model_version, response.id) == ("add", "1", "r")
    result = grpcclient.InferResult(triton_pb.ModelInferResponse.FromString(data))
    got = result.as_numpy("y")
    assert got.shape == (2, 3)
    np.testing.assert_array_equal(got, array)


def test_outputs_follow_the_request_then_the_spec() -> None:
    spec = make_spec(outputs=(Tensor("y", np.float32, (1,)), Tensor("z", np.float32, (1,))))
    outputs = {"y": np.zeros((1, 1), np.float32), "z": np.ones((1, 1), np.float32)}
    everything = pb.ModelInferResponse.FromString(encode_infer_response(spec, InferRequest("add", 1, {}), outputs))
    assert [o.name for o in everything.outputs] == ["y", "z"]
    request = InferRequest("add", 1, {}, outputs=(RequestedOutput("z"),))
    only_z = pb.ModelInferResponse.FromString(encode_infer_response(spec, request, outputs))
    assert [o.name for o in only_z.outputs] == ["z"]
    assert only_z.raw_output_contents == [np.ones(1, np.float32).tobytes()]
    with pytest.raises(OutputValidationError, match="output 'z' of model 'add' v1 was requested but not returned"):
        encode_infer_response(spec, InferRequest("add", 1, {}, outputs=(RequestedOutput("z"),)), {"y": outputs["y"]})


# -- the same rules and messages as REST -------------------------------------------------------------------------


def to_grpc(document: dict[str, Any]) -> pb.ModelInferRequest:
    """The gRPC request that says what a REST JSON request says (data as typed contents)."""
    message = pb.ModelInferRequest(id=document.get("id", ""))
    for entry in document["inputs"]:
        tensor = message.inputs.add(name=entry["name"], datatype=entry["datatype"], shape=entry["shape"])
        for key, value in entry.get("parameters", {}).items():
            set_parameter(tensor.parameters[key], value)
        getattr(tensor.contents, CONTENTS[entry["datatype"]]).extend(np.ravel(entry["data"]).tolist())
    for key, value in document.get("parameters", {}).items():
        set_parameter(message.parameters[key], value)
    for entry in document.get("outputs", []):
        output = message.outputs.add(name=entry["name"])
        for key, value in entry.get("parameters", {}).items():
            set_parameter(output.parameters[key], value)
    return message


def both(document: dict[str, Any], spec: ModelSpec = SPEC) -> tuple[InferRequest, InferRequest]:
    return rest.parse_infer_request(json.dumps(document).encode(), None, spec), parse_infer_request(
        to_grpc(document), spec
    )


def x(shape: list[int] | None = None, datatype: str = "FP32", name: str = "x", **fields: Any) -> dict[str, Any]:
    shape = [2, 3] if shape is None else shape
    count = int(np.prod(shape)) if all(d >= 0 for d in shape) else 0
    return {"name": name, "datatype": datatype, "shape": shape, "data": [0] * count, **fields}


INVALID = [
    pytest.param({"inputs": [x(name="z")]}, SPEC, id="unknown-input"),
    pytest.param({"inputs": [x(), x()]}, SPEC, id="input-twice"),
    pytest.param({"inputs": [x([2, -3])]}, SPEC, id="negative-dim"),
    pytest.param({"inputs": [x(datatype="FP64")]}, SPEC, id="wrong-datatype"),
    pytest.param({"inputs": [x([2, 4])]}, SPEC, id="wrong-shape"),
    pytest.param({"inputs": [x([3])]}, SPEC, id="no-batch-dim"),
    pytest.param({"inputs": [x([65, 3])]}, SPEC, id="batch-too-large"),
    pytest.param({"inputs": [x([0, 3])]}, SPEC, id="empty-batch"),
    pytest.param({"inputs": [x([2, 2], name="a"), x([3, 2], "INT64", "b")]}, TWO_IN, id="batch-mismatch"),
    pytest.param({"inputs": [x([2, 2], name="a")]}, TWO_IN, id="missing-input"),
    pytest.param({"inputs": [x(parameters={"shared_memory_region": "r"})]}, SPEC, id="shm-input"),
    pytest.param({"inputs": [x()], "outputs": [{"name": "q"}]}, SPEC, id="unknown-output"),
    pytest.param({"inputs": [x()], "outputs": [{"name": "y"}, {"name": "y"}]}, SPEC, id="output-twice"),
    pytest.param(
        {"inputs": [x()], "outputs": [{"name": "y", "parameters": {"classification": 3}}]}, SPEC, id="classification"
    ),
    pytest.param(
        {"inputs": [x()], "outputs": [{"name": "y", "parameters": {"shared_memory_region": "r"}}]}, SPEC, id="shm-out"
    ),
    pytest.param({"inputs": [x()], "parameters": {"priority": -1}}, SPEC, id="negative-priority"),
    pytest.param({"inputs": [x()], "parameters": {"priority": "high"}}, SPEC, id="string-priority"),
    pytest.param({"inputs": [x()], "parameters": {"timeout": 1.5}}, SPEC, id="float-timeout"),
    pytest.param({"inputs": [x()], "parameters": {"sequence_id": 5}}, SPEC, id="sequence-id"),
    pytest.param({"inputs": [x()], "parameters": {"sequence_start": True}}, SPEC, id="sequence-start"),
]


@pytest.mark.parametrize(("document", "spec"), INVALID)
def test_invalid_requests_get_the_rest_codecs_message(document: dict[str, Any], spec: ModelSpec) -> None:
    with pytest.raises(InvalidInputError) as over_rest:
        rest.parse_infer_request(json.dumps(document).encode(), None, spec)
    with pytest.raises(InvalidInputError) as over_grpc:
        parse_infer_request(to_grpc(document), spec)
    assert type(over_grpc.value) is type(over_rest.value)
    assert str(over_grpc.value) == str(over_rest.value)
    assert "model 'add' v1" in str(over_grpc.value)


def test_batch_too_large_is_its_own_class() -> None:
    with pytest.raises(BatchTooLargeError):
        parse_infer_request(to_grpc({"inputs": [x([65, 3])]}), SPEC)


def test_valid_requests_parse_alike() -> None:
    document = {
        "id": "r-1",
        "inputs": [x([2, 2], name="a"), x([2, 2], "INT64", "b")],
        "parameters": {"priority": 2, "timeout": 500, "tag": "t", "n": 3, "on": True, "x": 0.5, "triton_y": 1},
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
    }
    spec = make_spec(TWO_IN.inputs, (Tensor("y", np.float32, (2,)),))
    over_rest, over_grpc = both(document, spec)
    for request in (over_rest, over_grpc):
        assert (request.id, request.rows, request.priority, request.timeout_us) == ("r-1", 2, 2, 500)
        assert request.parameters == {"tag": "t", "n": 3, "on": True, "x": 0.5}
        assert request.outputs == (RequestedOutput("y", True),)
    assert {k: (v.dtype, v.shape) for k, v in over_rest.inputs.items()} == {
        k: (v.dtype, v.shape) for k, v in over_grpc.inputs.items()
    }


def test_parameters_from_tritonclient() -> None:
    message = from_tritonclient(
        [triton_input("x", np.zeros((1, 3), np.float32), "FP32")],
        priority=3,
        timeout=700,
        parameters={"tag": "a", "n": 2, "f": 0.5, "b": False},
    )
    request = parse_infer_request(message, SPEC)
    assert (request.priority, request.timeout_us) == (3, 700)
    assert request.parameters == {"tag": "a", "n": 2, "f": 0.5, "b": False}


def test_parameters_of_every_kind() -> None:
    parameters = {
        "b": pb.InferParameter(bool_param=True),
        "i": pb.InferParameter(int64_param=-2),
        "s": pb.InferParameter(string_param="s"),
        "d": pb.InferParameter(double_param=0.25),
        "u": pb.InferParameter(uint64_param=2**63),
        "none": pb.InferParameter(),
    }
    assert parameters_of(parameters) == {"b": True, "i": -2, "s": "s", "d": 0.25, "u": 2**63, "none": None}


# -- what only gRPC has: raw vs typed contents ---------------------------------------------------------------


def raw_request(*arrays: tuple[str, str, np.ndarray]) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest()
    for name, datatype, array in arrays:
        message.inputs.add(name=name, datatype=datatype, shape=array.shape)
        message.raw_input_contents.append(serialize_bytes(array) if datatype == "BYTES" else array.tobytes())
    return message


def test_raw_contents_for_some_inputs_only() -> None:
    message = raw_request(("a", "FP32", np.zeros((1, 2), np.float32)))
    message.inputs.add(name="b", datatype="INT64", shape=[1, 2]).contents.int64_contents.extend([1, 2])
    with pytest.raises(
        InvalidInputError, match=r"has 1 raw_input_contents for 2 inputs not in shared memory; give raw contents for"
    ):
        parse_infer_request(message, TWO_IN)


def test_raw_and_typed_contents_for_one_input() -> None:
    message = raw_request(("x", "FP32", np.zeros((1, 3), np.float32)))
    message.inputs[0].contents.fp32_contents.extend([1, 2, 3])
    with pytest.raises(InvalidInputError, match="input 'x' of model 'add' v1: give either 'contents' or raw_"):
        parse_infer_request(message, SPEC)


@pytest.mark.parametrize(
    ("datatype", "field", "values", "message"),
    [
        ("FP32", "int_contents", [1, 2, 3], "FP32 'contents' go in fp32_contents, got int_contents"),
        ("FP16", "fp32_contents", [1, 2, 3], "FP16 data has no 'contents' list; send it in raw_input_contents"),
        ("INT8", "int_contents", [1, 300, 3], "INT8 'contents' hold 300, out of range"),
        ("UINT16", "uint_contents", [1, 2, 70000], "UINT16 'contents' hold 70000, out of range"),
        ("FP32", "fp32_contents", [1, 2], "'contents' hold 2 elements but shape [1, 3] needs 3"),
    ],
)
def test_typed_contents_errors(datatype: str, field: str, values: list[Any], message: str) -> None:
    request = pb.ModelInferRequest()
    getattr(request.inputs.add(name="x", datatype=datatype, shape=[1, 3]).contents, field).extend(values)
    with pytest.raises(InvalidInputError) as caught:
        parse_infer_request(request, spec_of(datatype))
    assert str(caught.value) == f"input 'x' of model 'add' v1: {message}"


def test_raw_contents_of_the_wrong_size() -> None:
    message = raw_request(("x", "FP32", np.zeros((1, 3), np.float32)))
    message.raw_input_contents[0] = b"\0" * 8
    with pytest.raises(InvalidInputError, match="input 'x' of model 'add' v1: binary data holds 8 bytes but FP32"):
        parse_infer_request(message, SPEC)


def test_truncated_bytes_elements() -> None:
    message = raw_request(("x", "BYTES", np.array([[b"ab", b"cd", b"ef"]], dtype=object)))
    message.raw_input_contents[0] = message.raw_input_contents[0][:-1]
    with pytest.raises(InvalidInputError, match="input 'x' of model 'add' v1: BYTES element 2 claims 2 bytes"):
        parse_infer_request(message, spec_of("BYTES"))


def test_empty_tensor_needs_no_contents() -> None:
    spec = make_spec((Tensor("x", np.float32, (-1,)),), (Tensor("y", np.float32, (-1,)),))
    message = pb.ModelInferRequest()
    message.inputs.add(name="x", datatype="FP32", shape=[1, 0])
    assert parse_infer_request(message, spec).inputs["x"].shape == (1, 0)


# -- documents as messages -------------------------------------------------------------------------------------


def plain(message: Any) -> Any:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def same(document: Any, got: Any) -> bool:
    """Whether a protobuf JSON dict says what ``document`` says (64-bit ints come back as strings)."""
    if isinstance(document, dict):
        return all(same(value, got.get(key)) for key, value in document.items())
    if isinstance(document, list):
        return len(document) == len(got) and all(same(d, g) for d, g in zip(document, got, strict=True))
    if isinstance(document, int) and not isinstance(document, bool) and isinstance(got, str):
        return document == int(got)
    return bool(document == got)


BUSY = ModelSpec(
    "busy",
    3,
    (Tensor("x", np.float16, (-1, 2)), Tensor("t", bytes, (1,), optional=True)),
    (Tensor("y", np.int8, (2,)),),
    ModelConfig(
        max_batch_size=32,
        instances=2,
        batcher=DynamicBatcher(
            max_queue_delay_us=100,
            preferred_batch_sizes=(4, 8),
            priority_levels=2,
            default_queue_policy=QueuePolicy(TimeoutAction.DELAY, 5_000, max_queue_size=10),
            priority_queue_policies={1: QueuePolicy(max_queue_size=3)},
            preserve_ordering=True,
        ),
    ),
)


@pytest.mark.parametrize("spec", [SPEC, BUSY, make_spec(batching=False)], ids=["simple", "busy", "no-batching"])
def test_model_config_says_what_the_rest_document_says(spec: ModelSpec) -> None:
    document = documents.model_config(spec)
    config = grpc_codec.model_config_response(spec).config
    assert same(document, plain(config))
    assert config.HasField("dynamic_batching") is spec.config.batching


def test_metadata_index_and_statistics_say_what_the_rest_documents_say() -> None:
    assert same(documents.model_metadata(BUSY), plain(grpc_codec.model_metadata_response(BUSY)))
    assert same(documents.server_metadata("1.0", ["a"]), plain(grpc_codec.server_metadata_response("1.0", ["a"])))
    rows = [("busy", 3, "READY", ""), ("other", 1, "UNAVAILABLE", "no worker")]
    index = grpc_codec.repository_index_response(rows)
    assert same({"models": documents.repository_index(rows)}, plain(index))
    durations = {"success": (8, 1_000), "queue": (8, 50)}
    batches = {4: (1, 10, 20, 30), 2: (2, 1, 2, 3)}
    stats = [documents.model_statistics("busy", 3, 8, 3, durations, 1_700_000_000_123, batches)]
    response = grpc_codec.model_statistics_response(stats)
    assert same({"model_stats": stats}, plain(response))
    assert response.model_stats[0].inference_stats.queue.ns == 50
    assert response.model_stats[0].last_inference == 1_700_000_000_123
    assert [
        (b.batch_size, b.compute_infer.count, b.compute_output.ns) for b in response.model_stats[0].batch_stats
    ] == [
        (2, 2, 3),
        (4, 1, 30),
    ]


# -- the wire: raw contents split off without copies, responses framed by hand ------------------------------


def test_decoding_equals_protobufs_parse() -> None:
    message = from_tritonclient(
        [triton_input("a", np.ones((1, 2), np.float32), "FP32"), triton_input("b", np.ones((1, 2), np.int64), "INT64")],
        request_id="r",
        priority=2,
        parameters={"tag": "x"},
        outputs=[grpcclient.InferRequestedOutput("y")],
    )
    data = message.SerializeToString()
    received = decode_infer_request(data)
    whole = pb.ModelInferRequest.FromString(data)
    assert [bytes(raw) for raw in received.raw] == list(whole.raw_input_contents)
    del whole.raw_input_contents[:]
    assert received.message == whole


def test_decoding_leaves_unusual_messages_to_protobuf() -> None:
    unknown_varint = b"\x40\x01"  # field 8, varint: not a field of ours; protobuf keeps it as unknown
    data = pb.ModelInferRequest(model_name="m", raw_input_contents=[b"ab"]).SerializeToString() + unknown_varint
    received = decode_infer_request(data)
    assert (received.message.model_name, [bytes(r) for r in received.raw]) == ("m", [b"ab"])


def test_stream_response_frames_the_infer_response() -> None:
    data = encode_infer_response(
        spec_of("FP32"), InferRequest("add", 1, {}, id="7"), {"y": np.ones((1, 3), np.float32)}
    )
    stream = pb.ModelStreamInferResponse.FromString(encode_stream_response(data))
    assert (stream.error_message, stream.infer_response.id) == ("", "7")
    assert stream.infer_response.raw_output_contents == [np.ones(3, np.float32).tobytes()]


@pytest.mark.parametrize("data", [b"\x0a\x05ab", b"\x3a\xff", b"\x40"])
def test_malformed_requests_are_invalid_input(data: bytes) -> None:
    with pytest.raises(InvalidInputError, match="the request is not a well-formed ModelInferRequest: "):
        decode_infer_request(data)
