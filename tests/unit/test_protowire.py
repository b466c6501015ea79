"""The protobuf wire helpers agree with protobuf itself."""

from __future__ import annotations

import pytest

from pybind_serve.protocol.proto import grpc_service_pb2 as pb
from pybind_serve.protocol.protowire import field_header, split_field


@pytest.mark.parametrize("size", [0, 1, 127, 128, 300, 1 << 20])
def test_field_header_frames_bytes_as_protobuf_does(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    ours = field_header(6, size) + payload
    assert ours == pb.ModelInferResponse(raw_output_contents=[payload]).SerializeToString()


def test_split_field_takes_out_every_value_of_the_field_in_order() -> None:
    message = pb.ModelInferRequest(model_name="m", id="i", raw_input_contents=[b"a", b"", b"c" * 200])
    message.inputs.add(name="x", datatype="FP32", shape=[1])
    split = split_field(message.SerializeToString(), 7)
    assert split is not None
    rest, values = split
    assert [bytes(v) for v in values] == [b"a", b"", b"c" * 200]
    del message.raw_input_contents[:]
    assert pb.ModelInferRequest.FromString(rest) == message


def test_split_field_without_the_field_returns_the_data_itself() -> None:
    data = pb.ModelInferRequest(model_name="m").SerializeToString()
    assert split_field(data, 7) == (data, [])
    assert split_field(b"", 7) == (b"", [])


@pytest.mark.parametrize("data", [b"\x0a", b"\x0a\x05ab", b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"])
def test_malformed_messages_raise_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        split_field(data, 7)
