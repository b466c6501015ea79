"""The system shared-memory extension's parsing (protocol/shared_memory.py) and region registry (front/regions.py)."""

from __future__ import annotations

import doctest
import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from pybind_serve import ModelConfig, Tensor
from pybind_serve.errors import InvalidInputError
from pybind_serve.front import regions as regions_module
from pybind_serve.front.regions import Regions
from pybind_serve.protocol import grpc_codec, rest, shared_memory
from pybind_serve.protocol.proto import grpc_service_pb2 as pb
from pybind_serve.protocol.shared_memory import (
    RegionSpec,
    TensorReference,
    check_window,
    parse_register,
    reference_of,
)
from pybind_serve.spec import ModelSpec


@pytest.fixture
def segment() -> Iterator[str]:
    """A 256-byte client segment (a key as tritonclient passes it), unlinked by the test, not the registry."""
    key = f"/test_shm_{uuid.uuid4().hex}"
    fd = os.open(f"/dev/shm{key}", os.O_CREAT | os.O_RDWR, 0o600)
    os.ftruncate(fd, 256)
    os.close(fd)
    yield key
    os.unlink(f"/dev/shm{key}")


@pytest.fixture
def regions() -> Iterator[Regions]:
    registry = Regions()
    yield registry
    registry.close()


@pytest.mark.parametrize("module", [shared_memory, regions_module])
def test_doctests_pass(module: object) -> None:
    assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0  # type: ignore[arg-type]


def test_parse_register_reads_triton_body() -> None:
    assert parse_register("r", {"key": "/k", "offset": 4, "byte_size": 8}) == RegionSpec("r", "/k", 4, 8)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"byte_size": 8}, "'key' must be a non-empty string"),
        ({"key": "/k"}, "'byte_size'"),
        ({"key": "/k", "byte_size": 0}, "must be positive"),
        ({"key": "/k", "byte_size": 8, "offset": -1}, "'offset'"),
        ({"key": "/k", "byte_size": "8"}, "non-negative integer"),
        ({"key": "/k", "byte_size": True}, "non-negative integer"),
    ],
)
def test_parse_register_refuses_bad_bodies(body: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_register("r", body)


def test_reference_of_reads_parameters() -> None:
    params = {"shared_memory_region": "r", "shared_memory_byte_size": 16, "shared_memory_offset": 8}
    assert reference_of("input", "x", params) == TensorReference("r", 8, 16)
    assert reference_of("input", "x", {"binary_data": True}) is None


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"shared_memory_byte_size": 4}, "without 'shared_memory_region'"),
        ({"shared_memory_region": "r"}, "'shared_memory_byte_size' is required"),
        ({"shared_memory_region": "", "shared_memory_byte_size": 4}, "non-empty string"),
        ({"shared_memory_region": "r", "shared_memory_byte_size": -4}, "non-negative"),
        ({"shared_memory_region": "r", "shared_memory_byte_size": 4, "shared_memory_offset": "0"}, "non-negative"),
    ],
)
def test_reference_of_names_tensor_in_errors(params: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message) as raised:
        reference_of("input", "x", params)
    assert "'x'" in str(raised.value)


def test_check_window_allows_exact_fit_and_refuses_overrun() -> None:
    region = RegionSpec("r", "/k", 0, 16)
    check_window("output", "y", TensorReference("r", 0, 16), region)
    with pytest.raises(InvalidInputError, match=r"output 'y'.*region 'r' of 16 bytes"):
        check_window("output", "y", TensorReference("r", 16, 1), region)


def test_register_view_round_trip_respects_region_offset(regions: Regions, segment: str) -> None:
    regions.register(RegionSpec("r", segment, 64, 32))
    regions.view("input", "x", TensorReference("r", 0, 4))[:] = b"wxyz"
    with open(f"/dev/shm{segment}", "rb") as file:
        assert file.read()[64:68] == b"wxyz"
    assert regions.status() == [RegionSpec("r", segment, 64, 32)]
    assert regions.status("r") == [RegionSpec("r", segment, 64, 32)]


def test_view_never_reaches_outside_the_window(regions: Regions, segment: str) -> None:
    regions.register(RegionSpec("r", segment, 64, 32))
    with pytest.raises(InvalidInputError, match="exceeds shared memory region 'r' of 32 bytes"):
        regions.view("input", "x", TensorReference("r", 16, 32))
    assert len(regions.view("input", "x", TensorReference("r", 0, 32))) == 32


def test_register_refuses_missing_key_duplicate_and_oversize(regions: Regions, segment: str) -> None:
    with pytest.raises(InvalidInputError, match="Unable to open shared memory region 'r'"):
        regions.register(RegionSpec("r", "/no_such_key_for_pybind_serve", 0, 8))
    with pytest.raises(InvalidInputError, match="exceeds the 256 bytes"):
        regions.register(RegionSpec("r", segment, 200, 64))
    with pytest.raises(InvalidInputError, match="invalid key"):
        regions.register(RegionSpec("r", "/../etc/passwd", 0, 8))
    regions.register(RegionSpec("r", segment, 0, 8))
    with pytest.raises(InvalidInputError, match="already in manager"):
        regions.register(RegionSpec("r", segment, 0, 8))


def test_unknown_region_and_unregister(regions: Regions, segment: str) -> None:
    with pytest.raises(InvalidInputError, match=r"input 'x': unable to find .* region 'nope'"):
        regions.view("input", "x", TensorReference("nope", 0, 1))
    with pytest.raises(InvalidInputError, match="Unable to find"):
        regions.status("nope")
    regions.register(RegionSpec("a", segment, 0, 8))
    regions.register(RegionSpec("b", segment, 8, 8))
    regions.unregister("a")
    assert [spec.name for spec in regions.status()] == ["b"]
    regions.unregister()
    assert regions.status() == []
    assert os.path.exists(f"/dev/shm{segment}")  # the client's segment is never unlinked


def test_a_view_outlives_the_unregister_of_its_region(regions: Regions, segment: str) -> None:
    """A request still queued when its client unregisters keeps reading valid memory (no crash, no error)."""
    regions.register(RegionSpec("r", segment, 0, 16))
    array = np.frombuffer(regions.view("input", "x", TensorReference("r", 0, 16)), np.float32)
    array_before = array.copy()
    regions.unregister("r")
    np.testing.assert_array_equal(array, array_before)
    with pytest.raises(InvalidInputError, match="unable to find system shared memory region 'r'"):
        regions.view("input", "x", TensorReference("r", 0, 16))


def test_register_refuses_the_servers_own_segments(regions: Regions) -> None:
    with pytest.raises(InvalidInputError, match="belongs to pybind_serve itself"):
        regions.register(RegionSpec("r", "/pybind_serve_1_abc_front_0", 0, 8))


# -- the codecs read inputs from regions and write outputs into them -----------------------------------------

SPEC = ModelSpec("m", 1, (Tensor("x", np.float32, (-1,)),), (Tensor("y", np.float32, (-1,)),), ModelConfig())
X = np.arange(4, dtype=np.float32).reshape(1, 4)


def shm_parameters(offset: int, size: int) -> dict[str, Any]:
    return {"shared_memory_region": "r", "shared_memory_byte_size": size, "shared_memory_offset": offset}


def test_rest_reads_an_input_and_writes_an_output_in_place(regions: Regions, segment: str) -> None:
    regions.register(RegionSpec("r", segment, 0, 64))
    regions.view("input", "x", TensorReference("r", 0, 16))[:] = X.tobytes()
    document = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "parameters": shm_parameters(0, 16)}],
        "outputs": [{"name": "y", "parameters": shm_parameters(32, 32)}],
    }
    request = rest.parse_infer_request(json.dumps(document).encode(), None, SPEC, regions)
    np.testing.assert_array_equal(request.inputs["x"], X)
    body, header_length = rest.encode_infer_response(SPEC, request, {"y": X * 2})
    assert header_length is None
    assert json.loads(body)["outputs"] == [{"name": "y", "datatype": "FP32", "shape": [1, 4]}]
    written = np.frombuffer(regions.view("output", "y", TensorReference("r", 32, 16)), np.float32)
    np.testing.assert_array_equal(written, (X * 2)[0])


def test_grpc_pairs_raw_contents_with_the_inputs_not_in_shared_memory(regions: Regions, segment: str) -> None:
    spec = ModelSpec(
        "m", 1, (Tensor("a", np.float32, (-1,)), Tensor("b", np.float32, (-1,))), SPEC.outputs, SPEC.config
    )
    regions.register(RegionSpec("r", segment, 0, 64))
    regions.view("input", "a", TensorReference("r", 0, 16))[:] = X.tobytes()
    message = pb.ModelInferRequest(model_name="m")
    a = message.inputs.add(name="a", datatype="FP32", shape=[1, 4])
    for key, value in shm_parameters(0, 16).items():
        setattr(a.parameters[key], "string_param" if isinstance(value, str) else "int64_param", value)
    message.inputs.add(name="b", datatype="FP32", shape=[1, 4])
    message.raw_input_contents.append((X + 1).tobytes())
    output = message.outputs.add(name="y")
    for key, value in shm_parameters(16, 16).items():
        setattr(output.parameters[key], "string_param" if isinstance(value, str) else "int64_param", value)
    request = grpc_codec.parse_infer_request(message, spec, None, regions)
    np.testing.assert_array_equal(request.inputs["a"], X)
    np.testing.assert_array_equal(request.inputs["b"], X + 1)
    response = pb.ModelInferResponse.FromString(grpc_codec.encode_infer_response(spec, request, {"y": X * 3}))
    assert list(response.raw_output_contents) == [b""]  # an empty entry keeps clients' pairing by position
    assert response.outputs[0].parameters["shared_memory_region"].string_param == "r"
    written = np.frombuffer(regions.view("output", "y", TensorReference("r", 16, 16)), np.float32)
    np.testing.assert_array_equal(written, (X * 3)[0])


@pytest.mark.parametrize(
    ("parameters", "data", "message"),
    [
        (shm_parameters(0, 12), False, r"shared_memory_byte_size 12 does not match FP32 \[1, 4\], which needs 16"),
        (shm_parameters(60, 16), False, r"offset 60 \+ byte size 16 exceeds shared memory region 'r' of 64 bytes"),
        (shm_parameters(0, 16), True, r"give either shared memory parameters or 'data'"),
        ({"shared_memory_region": "other", "shared_memory_byte_size": 16}, False, r"unable to find .* 'other'"),
    ],
    ids=["wrong-size", "outside", "also-data", "unknown-region"],
)
def test_rest_refuses_bad_input_windows(
    regions: Regions, segment: str, parameters: dict[str, Any], data: bool, message: str
) -> None:
    regions.register(RegionSpec("r", segment, 0, 64))
    entry: dict[str, Any] = {"name": "x", "datatype": "FP32", "shape": [1, 4], "parameters": parameters}
    if data:
        entry["data"] = [1, 2, 3, 4]
    with pytest.raises(InvalidInputError, match=message):
        rest.parse_infer_request(json.dumps({"inputs": [entry]}).encode(), None, SPEC, regions)


def test_an_output_window_too_small_fails_the_request_after_the_model_ran(regions: Regions, segment: str) -> None:
    regions.register(RegionSpec("r", segment, 0, 64))
    document = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}
    document["outputs"] = [{"name": "y", "parameters": shm_parameters(0, 8)}]
    request = rest.parse_infer_request(json.dumps(document).encode(), None, SPEC, regions)
    with pytest.raises(InvalidInputError, match=r"model 'm' v1: output 'y': .* \(8 bytes\) should be at least 16"):
        rest.encode_infer_response(SPEC, request, {"y": X})
