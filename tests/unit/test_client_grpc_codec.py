"""The client side of the KServe v2 gRPC wire (`pybind_serve.client.grpc_codec`) against the server side
(`pybind_serve.protocol.grpc_codec`): requests and responses both ways, streams, and errors by status code."""

from __future__ import annotations

import numpy as np
import pytest

from pybind_serve.client.exchange import CallOptions, GrpcReply, GrpcRequest, ModelRef
from pybind_serve.client.grpc_codec import GrpcCodec, decode_infer, decode_stream, encode_infer
from pybind_serve.config import ModelConfig
from pybind_serve.errors import (
    InferenceError,
    InferenceTimeoutError,
    InternalServerError,
    InvalidInputError,
    ModelExecutionError,
    ModelNotFoundError,
    UnavailableError,
    UnsupportedError,
)
from pybind_serve.protocol import grpc_codec as server
from pybind_serve.protocol.proto import grpc_service_pb2 as pb
from pybind_serve.spec import ModelSpec
from pybind_serve.tensor import Tensor

SPEC = ModelSpec(
    "m",
    1,
    (Tensor("x", np.float32, (2,)), Tensor("s", bytes, (1,))),
    (Tensor("y", np.int64, (2,)), Tensor("t", bytes, (1,))),
    ModelConfig(max_batch_size=8),
)
CODEC = GrpcCodec()
OPTIONS = CallOptions(5.0, {"Authorization": "Bearer x"})
OUTPUTS = {"y": np.array([[1, 2], [3, 4]]), "t": np.array([[b"p"], [b"\xff"]], dtype=object)}


def answer_to(body: bytes) -> bytes:
    """What our server answers to a serialized ModelInferRequest."""
    received = server.decode_infer_request(body)
    return server.encode_infer_response(SPEC, server.parse_infer_request(received.message, SPEC, received.raw), OUTPUTS)


def test_the_server_reads_what_the_client_encodes() -> None:
    x, s = np.array([[1.5, -2]], dtype=np.float32), np.array([["hé"]])
    parameters = {"priority": 2, "factor": 2.5, "flag": True, "tag": "a", "n": -3}
    call = CODEC.infer(ModelRef("m", "1"), {"x": x, "s": s}, parameters, ["y"], OPTIONS)
    request = call.request
    assert isinstance(request, GrpcRequest)
    assert (request.method, request.timeout_s, request.metadata) == (
        "ModelInfer",
        5.0,
        (("authorization", "Bearer x"),),
    )
    received = server.decode_infer_request(request.body)
    assert len(received.raw) == 2  # raw_input_contents, left in the buffer by the server
    parsed = server.parse_infer_request(received.message, SPEC, received.raw)
    assert parsed.inputs["x"].tolist() == x.tolist() and parsed.inputs["s"].tolist() == [["hé".encode()]]
    assert parsed.priority == 2 and parsed.parameters == {"factor": 2.5, "flag": True, "tag": "a", "n": -3}
    assert received.message.parameters["priority"].HasField("uint64_param")  # where Triton reads it
    assert [o.name for o in parsed.outputs or ()] == ["y"]


def test_the_client_reads_what_the_server_answers_as_writable_arrays() -> None:
    body = encode_infer(ModelRef("m"), {"x": np.zeros((2, 2), np.float32), "s": np.array([[b"a"], [b"b"]])}, {}, None)
    decoded = decode_infer(GrpcReply("OK", "", bytearray(answer_to(body))))
    assert decoded["y"].dtype == np.int64 and decoded["y"].tolist() == [[1, 2], [3, 4]]
    assert decoded["y"].flags.writeable
    assert decoded["t"].tolist() == [[b"p"], [b"\xff"]]


def test_outputs_sent_as_typed_contents_are_read_too() -> None:
    response = pb.ModelInferResponse(model_name="m")
    response.outputs.add(name="y", datatype="INT8", shape=[2], contents=pb.InferTensorContents(int_contents=[-1, 7]))
    response.outputs.add(name="t", datatype="BYTES", shape=[1], contents=pb.InferTensorContents(bytes_contents=[b"z"]))
    decoded = decode_infer(GrpcReply("OK", "", response.SerializeToString()))
    assert decoded["y"].dtype == np.int8 and decoded["y"].tolist() == [-1, 7] and decoded["t"].tolist() == [b"z"]
    response.outputs[0].contents.int_contents[:] = [1, 2, 3]
    with pytest.raises(InternalServerError, match="output 'y' whose contents are not INT8"):
        decode_infer(GrpcReply("OK", "", response.SerializeToString()))


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("INVALID_ARGUMENT", InvalidInputError),
        ("NOT_FOUND", ModelNotFoundError),
        ("INTERNAL", ModelExecutionError),
        ("UNIMPLEMENTED", UnsupportedError),
        ("UNAVAILABLE", UnavailableError),
        ("DEADLINE_EXCEEDED", InferenceTimeoutError),
        ("UNKNOWN", InferenceError),
    ],
)
def test_a_failed_call_raises_the_class_of_its_code(code: str, cls: type[InferenceError]) -> None:
    for parse in (decode_infer, CODEC.model_metadata(ModelRef("m"), OPTIONS).parse, decode_stream):
        with pytest.raises(cls) as raised:
            parse(GrpcReply(code, "model 'm' v1: no"))
        assert type(raised.value) is cls and str(raised.value) == "model 'm' v1: no"


def test_a_response_that_does_not_decode_is_an_internal_server_error() -> None:
    with pytest.raises(InternalServerError, match="not a protobuf message"):
        decode_infer(GrpcReply("OK", "", b"\x0a\xff"))
    response = pb.ModelInferResponse(
        outputs=[pb.ModelInferResponse.InferOutputTensor(name="y", datatype="FP32", shape=[2])]
    )
    response.raw_output_contents.append(b"123")
    with pytest.raises(InternalServerError, match="output 'y' that does not decode"):
        decode_infer(GrpcReply("OK", "", response.SerializeToString()))


def stream_answer(response: pb.ModelInferResponse | None = None, error: str = "") -> GrpcReply:
    message = pb.ModelStreamInferResponse(error_message=error)
    if response is not None:
        message.infer_response.CopyFrom(response)
    return GrpcReply("OK", "", bytearray(message.SerializeToString()))


def test_stream_responses_carry_their_outputs_and_the_final_flag() -> None:
    call = CODEC.stream_infer(ModelRef("m"), {"x": np.zeros((1, 2), np.float32)}, {}, None, OPTIONS)
    request = server.decode_infer_request(call.request.body).message
    assert call.request.method == "ModelStreamInfer"
    assert request.parameters["triton_enable_empty_final_response"].bool_param  # as tritonclient asks
    ours = answer_to(
        encode_infer(ModelRef("m"), {"x": np.zeros((2, 2), np.float32), "s": np.array([[b""], [b""]])}, {}, None)
    )
    first = call.parse(GrpcReply("OK", "", bytearray(server.encode_stream_response(ours))))  # no flag: not final
    assert not first.final and first.outputs["y"].tolist() == [[1, 2], [3, 4]] and first.outputs["y"].flags.writeable
    final = pb.ModelInferResponse(model_name="m")
    final.parameters["triton_final_response"].bool_param = True
    last = call.parse(stream_answer(final))
    assert last.final and last.outputs == {}


def test_a_stream_error_has_no_code_so_it_is_an_inference_error() -> None:
    with pytest.raises(InferenceError, match="unknown model 'z'") as raised:
        decode_stream(stream_answer(pb.ModelInferResponse(model_name="z"), error="unknown model 'z'"))
    assert type(raised.value) is InferenceError


def test_metadata_and_config_messages_are_read_as_the_rest_documents() -> None:
    model = ModelRef("m", "1")
    metadata = CODEC.model_metadata(model, OPTIONS).parse(
        GrpcReply("OK", "", server.model_metadata_response(SPEC).SerializeToString())
    )
    assert [(t.name, t.datatype, t.shape) for t in metadata.inputs] == [("x", "FP32", (-1, 2)), ("s", "BYTES", (-1, 1))]
    config = CODEC.model_config(model, OPTIONS).parse(
        GrpcReply("OK", "", server.model_config_response(SPEC).SerializeToString())
    )
    assert config.max_batch_size == 8 and config.inputs == SPEC.inputs and config.outputs == SPEC.outputs


def test_readiness_load_and_unload() -> None:
    ready = CODEC.model_ready(ModelRef("m"), OPTIONS)
    assert ready.parse(GrpcReply("OK", "", pb.ModelReadyResponse(ready=True).SerializeToString())) is True
    assert ready.parse(GrpcReply("NOT_FOUND", "unknown model")) is False
    load = CODEC.load_model(ModelRef("m"), OPTIONS)
    assert pb.RepositoryModelLoadRequest.FromString(load.request.body).model_name == "m"
    with pytest.raises(UnsupportedError, match="no model repository"):
        load.parse(GrpcReply("UNIMPLEMENTED", "no model repository"))
    assert CODEC.unload_model(ModelRef("m"), OPTIONS).parse(GrpcReply("OK", "", b"")) is None


def test_a_parameter_of_another_type_is_invalid_input() -> None:
    with pytest.raises(InvalidInputError, match="parameter 'p' must be a bool, int, float or str"):
        encode_infer(ModelRef("m"), {}, {"p": [1]}, None)
