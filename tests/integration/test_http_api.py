"""The KServe v2 REST endpoints, answered as Triton answers them, by one real server with several models bound."""

from __future__ import annotations

import gzip
import json
import struct
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from pybind_serve import ModelConfig, Request, Serve, Tensor, batch, sample

TIMEOUT_S = 10.0


@batch
def add_sub(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    return {"add": a + b, "sub": a - b}


def add_constant(constant: int) -> Callable[..., Any]:
    @batch
    def add(x: np.ndarray) -> dict[str, np.ndarray]:
        return {"y": x + constant}

    return add


def scale(requests: list[Request]) -> list[dict[str, np.ndarray]]:
    """Undecorated: one dict per request, scaled by the request's custom ``scale`` parameter."""
    return [{"y": r["x"] * r.parameters["scale"]} for r in requests]


@batch
def upper(text: np.ndarray) -> dict[str, np.ndarray]:
    return {"upper": np.array([item.upper() for item in text.reshape(-1)], dtype=object).reshape(text.shape)}


@sample
def transpose(x: np.ndarray) -> dict[str, np.ndarray]:
    return {"t": x.T}


def fp32(name: str) -> Tensor:
    return Tensor(name, np.float32, (-1,))


def bind_models(serve: Serve) -> None:
    serve.bind(
        "add_sub",
        add_sub,
        inputs=[fp32("a"), fp32("b")],
        outputs=[fp32("add"), fp32("sub")],
        config=ModelConfig(max_batch_size=8),
    )
    for version in (1, 2):
        serve.bind("versioned", add_constant(version), inputs=[fp32("x")], outputs=[fp32("y")], version=version)
    serve.bind("scale", scale, inputs=[fp32("x")], outputs=[fp32("y")])
    serve.bind("text", upper, inputs=[Tensor("text", bytes, (-1,))], outputs=[Tensor("upper", bytes, (-1,))])
    serve.bind(
        "transpose",
        transpose,
        inputs=[Tensor("x", np.int32, (2, 3))],
        outputs=[Tensor("t", np.int32, (3, 2))],
        config=ModelConfig(batching=False),
    )


def vector(name: str, values: list[float], datatype: str = "FP32") -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": [1, len(values)], "data": values}


ADD_SUB = {"inputs": [vector("a", [1, 2, 3]), vector("b", [10, 20, 30])]}
TEXT = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1, 2], "data": ["abc", "héllo"]}]}
TRANSPOSE = {"inputs": [{"name": "x", "datatype": "INT32", "shape": [2, 3], "data": [[1, 2, 3], [4, 5, 6]]}]}
WARM_UP = [
    ("/v2/models/add_sub/infer", ADD_SUB),
    ("/v2/models/versioned/versions/1/infer", {"inputs": [vector("x", [1])]}),
    ("/v2/models/versioned/versions/2/infer", {"inputs": [vector("x", [1])]}),
    ("/v2/models/scale/infer", {"inputs": [vector("x", [1])], "parameters": {"scale": 2}}),
    ("/v2/models/text/infer", TEXT),
    ("/v2/models/transpose/infer", TRANSPOSE),
]


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    """One server for the module. Module-scoped fixtures start before the autouse leak check takes its
    first snapshot, and the warm-up makes every worker map its shared-memory arena now, so the segments
    a test's first inference would create already exist when each test's snapshot is taken."""
    serve = Serve(http_port=0, grpc_port=0, metrics_port=0)
    try:
        bind_models(serve)
        serve.run()
        with httpx.Client(base_url=serve.http_url, timeout=TIMEOUT_S) as c:
            for path, body in WARM_UP:
                assert c.post(path, json=body).status_code == 200, path
            yield c
    finally:
        serve.stop()


def infer(client: httpx.Client, model: str, body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    response = client.post(f"/v2/models/{model}/infer", json=body, **kwargs)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    document: dict[str, Any] = response.json()
    return document


def outputs_by_name(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {output["name"]: output for output in document["outputs"]}


def binary_request(document: dict[str, Any], *buffers: bytes) -> tuple[bytes, dict[str, str]]:
    """A body of the binary tensor data extension: the JSON header, then the raw tensors, in input order."""
    header = json.dumps(document).encode()
    return header + b"".join(buffers), {"Inference-Header-Content-Length": str(len(header))}


def binary_response(response: httpx.Response) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The JSON header of a binary response and the raw bytes of each of its binary outputs."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    length = int(response.headers["inference-header-content-length"])
    header = json.loads(response.content[:length])
    raw, offset = {}, length
    for output in header["outputs"]:
        if "data" in output:
            continue
        size = output["parameters"]["binary_data_size"]
        raw[output["name"]] = response.content[offset : offset + size]
        offset += size
    assert offset == len(response.content)
    return header, raw


def bytes_tensor(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


# -- health and metadata -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v2/health/live", "/v2/health/ready"])
def test_health_is_200_with_every_model_ready(client: httpx.Client, path: str) -> None:
    assert client.get(path).status_code == 200


def test_server_metadata_names_the_server_its_version_and_extensions(client: httpx.Client) -> None:
    response = client.get("/v2")
    assert response.status_code == 200
    document = response.json()
    assert document["name"] == "pybind_serve"
    assert document["version"]
    assert isinstance(document["extensions"], list)
    assert "binary_tensor_data" in document["extensions"]


@pytest.mark.parametrize("path", ["/v2/models/add_sub", "/v2/models/add_sub/versions/1"])
def test_model_metadata_shows_the_batch_dim_as_minus_one(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    document = response.json()
    assert document["name"] == "add_sub"
    assert document["versions"] == ["1"]
    assert document["inputs"] == [
        {"name": "a", "datatype": "FP32", "shape": [-1, -1]},
        {"name": "b", "datatype": "FP32", "shape": [-1, -1]},
    ]
    assert document["outputs"] == [
        {"name": "add", "datatype": "FP32", "shape": [-1, -1]},
        {"name": "sub", "datatype": "FP32", "shape": [-1, -1]},
    ]


def test_model_metadata_of_a_non_batching_model_has_no_batch_dim(client: httpx.Client) -> None:
    document = client.get("/v2/models/transpose").json()
    assert document["inputs"] == [{"name": "x", "datatype": "INT32", "shape": [2, 3]}]
    assert document["outputs"] == [{"name": "t", "datatype": "INT32", "shape": [3, 2]}]


def test_bytes_model_metadata_says_bytes(client: httpx.Client) -> None:
    document = client.get("/v2/models/text").json()
    assert document["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1, -1]}]


@pytest.mark.parametrize("path", ["/v2/models/add_sub/ready", "/v2/models/add_sub/versions/1/ready"])
def test_model_ready(client: httpx.Client, path: str) -> None:
    assert client.get(path).status_code == 200


def test_model_config_is_triton_shaped(client: httpx.Client) -> None:
    response = client.get("/v2/models/add_sub/config")
    assert response.status_code == 200
    config = response.json()
    assert config["name"] == "add_sub"
    assert config["max_batch_size"] == 8
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == [
        ("a", "TYPE_FP32", [-1]),
        ("b", "TYPE_FP32", [-1]),
    ]
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["output"]] == [
        ("add", "TYPE_FP32", [-1]),
        ("sub", "TYPE_FP32", [-1]),
    ]
    assert "dynamic_batching" in config
    assert config["instance_group"][0]["kind"] == "KIND_CPU"
    assert config["instance_group"][0]["count"] == 1
    assert config["model_transaction_policy"] == {"decoupled": False}


def test_model_config_of_a_non_batching_model(client: httpx.Client) -> None:
    config = client.get("/v2/models/transpose/config").json()
    assert config["max_batch_size"] == 0
    assert config["input"][0]["dims"] == [2, 3]
    assert config["input"][0]["data_type"] == "TYPE_INT32"
    assert "dynamic_batching" not in config


def test_model_config_of_a_bytes_model_says_type_string(client: httpx.Client) -> None:
    config = client.get("/v2/models/text/config").json()
    assert config["input"][0]["data_type"] == "TYPE_STRING"
    assert config["output"][0]["data_type"] == "TYPE_STRING"


@pytest.mark.parametrize("body", [None, {"ready": True}], ids=["all", "ready-only"])
def test_repository_index_lists_every_model_version_ready(client: httpx.Client, body: dict[str, Any] | None) -> None:
    response = client.post("/v2/repository/index", json=body)
    assert response.status_code == 200
    rows = {(row["name"], row["version"], row["state"]) for row in response.json()}
    assert rows == {
        ("add_sub", "1", "READY"),
        ("versioned", "1", "READY"),
        ("versioned", "2", "READY"),
        ("scale", "1", "READY"),
        ("text", "1", "READY"),
        ("transpose", "1", "READY"),
    }


@pytest.mark.parametrize("action", ["load", "unload"])
def test_repository_load_and_unload_say_models_are_bound_from_python(client: httpx.Client, action: str) -> None:
    response = client.post(f"/v2/repository/models/add_sub/{action}")
    assert response.status_code == 501
    assert f"cannot {action} model 'add_sub'" in response.json()["error"] and "Serve.bind()" in response.json()["error"]
    assert client.get("/v2/models/add_sub/ready").status_code == 200  # and nothing changed


@pytest.mark.parametrize("path", ["/v2/nope", "/v2/models/add_sub/nope", "/"])
def test_unknown_route_is_404_with_a_json_error(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert isinstance(response.json()["error"], str)


@pytest.mark.parametrize("path", ["/v2/models/nope", "/v2/models/nope/config", "/v2/models/nope/ready"])
def test_unknown_model_metadata_is_404_naming_the_model(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert "'nope'" in response.json()["error"]


# -- inference -----------------------------------------------------------------------------------------------


def test_infer_with_json_data(client: httpx.Client) -> None:
    document = infer(client, "add_sub", ADD_SUB)
    assert document["model_name"] == "add_sub"
    assert document["model_version"] == "1"
    assert "id" not in document
    assert document["outputs"] == [
        {"name": "add", "datatype": "FP32", "shape": [1, 3], "data": [11.0, 22.0, 33.0]},
        {"name": "sub", "datatype": "FP32", "shape": [1, 3], "data": [-9.0, -18.0, -27.0]},
    ]


def test_infer_with_several_rows_and_nested_data(client: httpx.Client) -> None:
    body = {
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [2, 2], "data": [[1, 2], [3, 4]]},
            {"name": "b", "datatype": "FP32", "shape": [2, 2], "data": [[1, 1], [1, 1]]},
        ]
    }
    outputs = outputs_by_name(infer(client, "add_sub", body))
    assert outputs["add"]["shape"] == [2, 2]
    assert outputs["add"]["data"] == [2.0, 3.0, 4.0, 5.0]


def test_id_is_echoed(client: httpx.Client) -> None:
    assert infer(client, "add_sub", {"id": "request-42", **ADD_SUB})["id"] == "request-42"


def test_infer_with_binary_input_tensors(client: httpx.Client) -> None:
    a = np.array([[1.5, 2.5]], dtype=np.float32)
    b = np.array([[0.5, 0.5]], dtype=np.float32)
    header = {
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": a.nbytes}},
            {"name": "b", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": b.nbytes}},
        ]
    }
    body, headers = binary_request(header, a.tobytes(), b.tobytes())
    response = client.post("/v2/models/add_sub/infer", content=body, headers=headers)
    assert "content-type" not in response.request.headers
    assert response.status_code == 200, response.text
    outputs = outputs_by_name(response.json())
    assert outputs["add"]["data"] == [2.0, 3.0]
    assert outputs["sub"]["data"] == [1.0, 2.0]


def test_binary_data_output_returns_every_output_as_raw_bytes(client: httpx.Client) -> None:
    response = client.post("/v2/models/add_sub/infer", json={**ADD_SUB, "parameters": {"binary_data_output": True}})
    header, raw = binary_response(response)
    assert header["model_name"] == "add_sub"
    assert [(o["name"], o["datatype"], o["shape"]) for o in header["outputs"]] == [
        ("add", "FP32", [1, 3]),
        ("sub", "FP32", [1, 3]),
    ]
    assert all("data" not in output for output in header["outputs"])
    assert np.frombuffer(raw["add"], dtype="<f4").tolist() == [11.0, 22.0, 33.0]
    assert np.frombuffer(raw["sub"], dtype="<f4").tolist() == [-9.0, -18.0, -27.0]


def test_binary_data_per_output(client: httpx.Client) -> None:
    body = {**ADD_SUB, "outputs": [{"name": "add", "parameters": {"binary_data": True}}, {"name": "sub"}]}
    header, raw = binary_response(client.post("/v2/models/add_sub/infer", json=body))
    outputs = outputs_by_name(header)
    assert np.frombuffer(raw["add"], dtype="<f4").tolist() == [11.0, 22.0, 33.0]
    assert outputs["sub"]["data"] == [-9.0, -18.0, -27.0]
    assert "sub" not in raw


def test_outputs_selects_the_requested_output_only(client: httpx.Client) -> None:
    document = infer(client, "add_sub", {**ADD_SUB, "outputs": [{"name": "sub"}]})
    assert [output["name"] for output in document["outputs"]] == ["sub"]
    assert document["outputs"][0]["data"] == [-9.0, -18.0, -27.0]


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("deflate", raw_deflate)],
    ids=["gzip", "deflate-zlib", "deflate-raw"],
)
def test_compressed_request_body(client: httpx.Client, encoding: str, compress: Callable[[bytes], bytes]) -> None:
    body = compress(json.dumps(ADD_SUB).encode())
    response = client.post("/v2/models/add_sub/infer", content=body, headers={"Content-Encoding": encoding})
    assert response.status_code == 200, response.text
    assert outputs_by_name(response.json())["add"]["data"] == [11.0, 22.0, 33.0]


@pytest.mark.parametrize("factor", [3, 0.5])
def test_custom_request_parameters_reach_the_function(client: httpx.Client, factor: float) -> None:
    body = {"inputs": [vector("x", [2, 4])], "parameters": {"scale": factor}}
    assert infer(client, "scale", body)["outputs"][0]["data"] == [2 * factor, 4 * factor]


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/v2/models/versioned", ("2", 12.0)), ("/v2/models/versioned/versions/1", ("1", 11.0))],
    ids=["latest", "v1"],
)
def test_version_routing(client: httpx.Client, path: str, expected: tuple[str, float]) -> None:
    response = client.post(f"{path}/infer", json={"inputs": [vector("x", [10])]})
    assert response.status_code == 200, response.text
    document = response.json()
    assert (document["model_version"], document["outputs"][0]["data"][0]) == expected
    assert client.get(path).json()["versions"] == [expected[0]]


@pytest.mark.parametrize(("method", "suffix"), [("POST", "/infer"), ("GET", ""), ("GET", "/config"), ("GET", "/ready")])
def test_unknown_version_is_404(client: httpx.Client, method: str, suffix: str) -> None:
    response = client.request(method, f"/v2/models/versioned/versions/3{suffix}", json={"inputs": [vector("x", [10])]})
    assert response.status_code == 404
    error = response.json()["error"]
    assert "'versioned'" in error
    assert "'3'" in error


def test_bytes_over_json(client: httpx.Client) -> None:
    document = infer(client, "text", TEXT)
    assert document["outputs"] == [{"name": "upper", "datatype": "BYTES", "shape": [1, 2], "data": ["ABC", "HéLLO"]}]


def test_bytes_over_binary(client: httpx.Client) -> None:
    data = bytes_tensor(b"ab", b"", b"\xff\x00z")
    header = {
        "inputs": [
            {"name": "text", "datatype": "BYTES", "shape": [1, 3], "parameters": {"binary_data_size": len(data)}}
        ],
        "parameters": {"binary_data_output": True},
    }
    body, headers = binary_request(header, data)
    response_header, raw = binary_response(client.post("/v2/models/text/infer", content=body, headers=headers))
    assert response_header["outputs"][0]["datatype"] == "BYTES"
    assert response_header["outputs"][0]["shape"] == [1, 3]
    assert raw["upper"] == bytes_tensor(b"AB", b"", b"\xff\x00Z")


def test_non_batching_model(client: httpx.Client) -> None:
    document = infer(client, "transpose", TRANSPOSE)
    assert document["outputs"] == [{"name": "t", "datatype": "INT32", "shape": [3, 2], "data": [1, 4, 2, 5, 3, 6]}]


# -- system shared memory is off by default ------------------------------------------------------------------


def test_system_shared_memory_is_off_by_default(client: httpx.Client) -> None:
    assert "system_shared_memory" not in client.get("/v2").json()["extensions"]
    for method, path in (
        ("GET", "/v2/systemsharedmemory/status"),
        ("POST", "/v2/systemsharedmemory/region/r/register"),
        ("POST", "/v2/systemsharedmemory/unregister"),
    ):
        response = client.request(method, path, json={"key": "/r", "byte_size": 16})
        assert response.status_code == 501, path
        assert "Serve(system_shared_memory=True)" in response.json()["error"]
    params = {"shared_memory_region": "r", "shared_memory_byte_size": 8}
    response = client.post("/v2/models/add_sub/infer", json={"inputs": [vector("a", [1, 2]) | {"parameters": params}]})
    assert response.status_code == 400
    assert "names shared memory region 'r', but system shared memory is off" in response.json()["error"]


def test_cuda_shared_memory_is_not_supported_but_unregistering_all_succeeds(client: httpx.Client) -> None:
    """perf_analyzer unregisters all CUDA regions before it starts, whatever its --shared-memory."""
    assert client.post("/v2/cudasharedmemory/unregister").status_code == 200
    assert client.get("/v2/cudasharedmemory/status").json() == []
    response = client.post("/v2/cudasharedmemory/region/r/register", json={"raw_handle": {"b64": ""}, "byte_size": 8})
    assert response.status_code == 501
    assert "CUDA shared memory is not supported" in response.json()["error"]


# -- the infer path's own ASGI handling (rest_infer.py) ---------------------------------------------------------


def test_infer_with_another_method_is_405_with_a_json_error(client: httpx.Client) -> None:
    response = client.get("/v2/models/add_sub/infer")
    assert response.status_code == 405
    assert "use POST" in response.json()["error"]


def test_infer_with_a_chunked_body(client: httpx.Client) -> None:
    body = json.dumps(ADD_SUB).encode()
    chunks = (body[i : i + 7] for i in range(0, len(body), 7))  # no Content-Length: Transfer-Encoding chunked
    response = client.post("/v2/models/add_sub/infer", content=chunks)
    assert response.status_code == 200, response.text
    assert outputs_by_name(response.json())["add"]["data"] == [11, 22, 33]
