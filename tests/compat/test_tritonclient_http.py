"""NVIDIA's own HTTP client, `tritonclient.http`, against a real `Serve().run()`, unchanged."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from pybind_serve import Serve


@pytest.fixture
def client(url: str) -> Iterator[httpclient.InferenceServerClient]:
    with httpclient.InferenceServerClient(url, connection_timeout=10, network_timeout=30) as c:
        yield c


def tensor(name: str, array: np.ndarray, datatype: str, binary: bool = True) -> httpclient.InferInput:
    infer_input = httpclient.InferInput(name, list(array.shape), datatype)
    infer_input.set_data_from_numpy(array, binary_data=binary)
    return infer_input


def add_sub_inputs(a: np.ndarray, b: np.ndarray, binary: bool = True) -> list[httpclient.InferInput]:
    return [tensor("a", a, "FP32", binary), tensor("b", b, "FP32", binary)]


A = np.arange(16, dtype=np.float32).reshape(1, 16)
B = np.ones((1, 16), dtype=np.float32)


# -- health and metadata -------------------------------------------------------------------------------------


def test_health(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("add_sub")
    assert client.is_model_ready("add_sub", "1")
    assert not client.is_model_ready("no_such_model")


def test_server_metadata(client: httpclient.InferenceServerClient) -> None:
    metadata = client.get_server_metadata()
    assert metadata["name"] == "pybind_serve"
    assert metadata["version"]
    assert "binary_tensor_data" in metadata["extensions"]


def test_model_metadata(client: httpclient.InferenceServerClient) -> None:
    metadata = client.get_model_metadata("identity")
    assert metadata["name"] == "identity"
    assert metadata["versions"] == ["1"]
    inputs = {t["name"]: (t["datatype"], t["shape"]) for t in metadata["inputs"]}
    assert inputs == {
        "fp32": ("FP32", [-1, -1]),
        "fp16": ("FP16", [-1, -1]),
        "int8": ("INT8", [-1, -1]),
        "text": ("BYTES", [-1, 1]),
        "mask": ("BOOL", [-1, 1]),
    }
    assert [t["name"] for t in metadata["outputs"]] == ["fp32_out", "fp16_out", "int8_out", "text_out", "mask_out"]


def test_model_config(client: httpclient.InferenceServerClient) -> None:
    config = client.get_model_config("add_sub")
    assert config["name"] == "add_sub"
    assert config["max_batch_size"] == 64
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == [
        ("a", "TYPE_FP32", [-1]),
        ("b", "TYPE_FP32", [-1]),
    ]
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["output"]] == [
        ("add", "TYPE_FP32", [-1]),
        ("sub", "TYPE_FP32", [-1]),
    ]
    assert "dynamic_batching" in config


def test_model_repository_index(client: httpclient.InferenceServerClient) -> None:
    index = client.get_model_repository_index()
    assert sorted((m["name"], m["version"], m["state"]) for m in index) == [
        ("add_sub", "1", "READY"),
        ("echo", "1", "READY"),
        ("identity", "1", "READY"),
    ]


# -- add_sub: JSON and binary, both ways ---------------------------------------------------------------------


@pytest.mark.parametrize("binary_inputs", [False, True], ids=["json_in", "binary_in"])
@pytest.mark.parametrize("binary_outputs", [False, True], ids=["json_out", "binary_out"])
def test_add_sub(client: httpclient.InferenceServerClient, binary_inputs: bool, binary_outputs: bool) -> None:
    outputs = [httpclient.InferRequestedOutput(name, binary_data=binary_outputs) for name in ("add", "sub")]
    result = client.infer("add_sub", add_sub_inputs(A, B, binary_inputs), outputs=outputs)
    np.testing.assert_array_equal(result.as_numpy("add"), A + B)
    np.testing.assert_array_equal(result.as_numpy("sub"), A - B)
    for output in result.get_response()["outputs"]:
        assert ("data" in output) is not binary_outputs, output


def test_only_the_requested_output_comes_back(client: httpclient.InferenceServerClient) -> None:
    outputs = [httpclient.InferRequestedOutput("sub")]
    result = client.infer("add_sub", add_sub_inputs(A, B), outputs=outputs)
    np.testing.assert_array_equal(result.as_numpy("sub"), A - B)
    assert result.as_numpy("add") is None


def test_gzip_request_compression(client: httpclient.InferenceServerClient) -> None:
    result = client.infer("add_sub", add_sub_inputs(A, B), request_compression_algorithm="gzip")
    np.testing.assert_array_equal(result.as_numpy("add"), A + B)
    np.testing.assert_array_equal(result.as_numpy("sub"), A - B)


def test_priority_and_timeout_are_accepted(client: httpclient.InferenceServerClient) -> None:
    result = client.infer("add_sub", add_sub_inputs(A, B), priority=1, timeout=1_000_000, request_id="req-7")
    np.testing.assert_array_equal(result.as_numpy("add"), A + B)
    assert result.get_response()["id"] == "req-7"


# -- identity: every dtype, the optional input -------------------------------------------------------------


def identity_arrays(with_mask: bool) -> dict[str, tuple[np.ndarray, str]]:
    arrays = {
        "fp32": (np.array([[1.5, -2.0, 3.25], [0.0, 1e-3, -7.0]], dtype=np.float32), "FP32"),
        "fp16": (np.array([[0.5, 1.0], [-65504.0, 2.5]], dtype=np.float16), "FP16"),
        "int8": (np.array([[-128, 0, 127], [1, -1, 2]], dtype=np.int8), "INT8"),
        "text": (np.array([["héllo wörld".encode()], ["日本語 ✓".encode()]], dtype=object), "BYTES"),
    }
    if with_mask:
        arrays["mask"] = (np.array([[False], [True]]), "BOOL")
    return arrays


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("with_mask", [True, False], ids=["mask_sent", "mask_filled"])
def test_identity_round_trips_every_dtype(
    client: httpclient.InferenceServerClient, binary: bool, with_mask: bool
) -> None:
    arrays = identity_arrays(with_mask)
    inputs = [tensor(name, array, datatype, binary) for name, (array, datatype) in arrays.items()]
    names = ("fp32", "fp16", "int8", "text", "mask")
    outputs = [httpclient.InferRequestedOutput(f"{name}_out", binary_data=binary) for name in names]
    result = client.infer("identity", inputs, outputs=outputs)
    for name in ("fp32", "fp16", "int8"):
        array, got = arrays[name][0], result.as_numpy(f"{name}_out")
        assert got.dtype == array.dtype, name
        np.testing.assert_array_equal(got, array)
    # tritonclient gives BYTES as bytes from binary data, as str from JSON (like Triton's own server).
    text = result.as_numpy("text_out")
    assert text.shape == (2, 1)
    assert [s.decode() if binary else s for s in text.ravel()] == ["héllo wörld", "日本語 ✓"]
    expected_mask = [[False], [True]] if with_mask else [[True], [True]]  # fill_optionals(mask=[True])
    assert result.as_numpy("mask_out").tolist() == expected_mask


# -- parameters reach an undecorated function ----------------------------------------------------------------


def test_request_parameters_reach_the_function(client: httpclient.InferenceServerClient) -> None:
    x = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
    result = client.infer("echo", [tensor("x", x, "FP32")], parameters={"tag": "grüße", "unused": 7})
    np.testing.assert_array_equal(result.as_numpy("y"), x)
    assert result.as_numpy("tag").tolist() == [["grüße".encode()]]
    assert result.as_numpy("names").tolist() == [[b"tag,unused"]]


def test_priority_and_timeout_are_the_servers_not_the_functions(client: httpclient.InferenceServerClient) -> None:
    x = np.zeros((1, 2), dtype=np.float32)
    result = client.infer("echo", [tensor("x", x, "FP32")], parameters={"tag": "t"}, priority=1, timeout=1_000_000)
    assert result.as_numpy("names").tolist() == [[b"tag"]]


# -- async fan-out -------------------------------------------------------------------------------------------


def test_async_infer_fan_out(url: str) -> None:
    with httpclient.InferenceServerClient(url, concurrency=8, connection_timeout=10, network_timeout=30) as client:
        arrays = [np.full((1, 16), i, dtype=np.float32) + np.arange(16, dtype=np.float32) for i in range(64)]
        pending = [client.async_infer("add_sub", add_sub_inputs(a, B)) for a in arrays]
        results = [p.get_result(timeout=30) for p in pending]
    for a, result in zip(arrays, results, strict=True):
        np.testing.assert_array_equal(result.as_numpy("add"), a + B)
        np.testing.assert_array_equal(result.as_numpy("sub"), a - B)


# -- errors --------------------------------------------------------------------------------------------------


def test_unknown_model(client: httpclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match="unknown model 'no_such_model'") as caught:
        client.infer("no_such_model", add_sub_inputs(A, B))
    assert caught.value.status() == "404"


def test_wrong_dtype_carries_the_servers_message(client: httpclient.InferenceServerClient) -> None:
    inputs = [tensor("a", A.astype(np.int32), "INT32"), tensor("b", B, "FP32")]
    expected = "input 'a' of model 'add_sub' v1: expected FP32 shape [-1, -1], got INT32 [1, 16]"
    with pytest.raises(InferenceServerException) as caught:
        client.infer("add_sub", inputs)
    assert caught.value.message() == expected
    assert caught.value.status() == "400"


def test_the_server_still_serves_after_errors(serve: Serve, client: httpclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException):
        client.infer("add_sub", [tensor("a", A, "FP32")])  # b is missing
    assert serve.is_ready()
    np.testing.assert_array_equal(client.infer("add_sub", add_sub_inputs(A, B)).as_numpy("add"), A + B)
