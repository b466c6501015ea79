"""Every bad input gets its status and a clear ``{"error": ...}``, and the server keeps serving afterwards."""

from __future__ import annotations

import gzip
import json
import struct
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from pybind_serve import ModelConfig, Request, Serve, Tensor, batch
from pybind_serve.errors import InvalidInputError

TIMEOUT_S = 10.0
MAX_BODY_BYTES = 1024


@batch
def add_sub(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    return {"add": a + b, "sub": a - b}


@batch
def echo(text: np.ndarray) -> dict[str, np.ndarray]:
    return {"echo": text}


def misbehave(requests: list[Request]) -> list[dict[str, Any]]:
    """Undecorated; each request's ``mode`` parameter picks how the function gets its answer wrong."""
    modes = [r.parameters.get("mode", "ok") for r in requests]
    if "raise" in modes:
        raise ValueError("boom: the model broke")
    if "invalid" in modes:
        raise InvalidInputError("x must be positive")
    if "short" in modes:
        return [{"y": r["x"]} for r in requests][:-1]
    return [_response(mode, r["x"]) for mode, r in zip(modes, requests, strict=True)]


def _response(mode: str, x: np.ndarray) -> dict[str, np.ndarray]:
    if mode == "dtype":
        return {"y": x.astype(np.float64)}
    if mode == "missing":
        return {}
    if mode == "extra":
        return {"y": x, "z": x}
    if mode == "rows":
        return {"y": np.concatenate([x, x])}
    return {"y": x}


def fp32(name: str) -> Tensor:
    return Tensor(name, np.float32, (-1,))


def bind_models(serve: Serve) -> None:
    serve.bind(
        "add_sub",
        add_sub,
        inputs=[fp32("a"), fp32("b")],
        outputs=[fp32("add"), fp32("sub")],
        config=ModelConfig(max_batch_size=4),
    )
    serve.bind("echo", echo, inputs=[Tensor("text", bytes, (-1,))], outputs=[Tensor("echo", bytes, (-1,))])
    serve.bind("strict", misbehave, inputs=[fp32("x")], outputs=[fp32("y")], strict=True)
    serve.bind("lax", misbehave, inputs=[fp32("x")], outputs=[fp32("y")])


def vector(name: str, values: list[Any], datatype: str = "FP32", rows: int = 1) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": [rows, len(values) // rows], "data": values}


ADD_SUB = {"inputs": [vector("a", [1, 2]), vector("b", [3, 4])]}
ECHO = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1, 1], "data": ["hi"]}]}
X = {"inputs": [vector("x", [1, 2])]}


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    """One server for the module (with a small max_body_bytes). Module-scoped fixtures start before the
    autouse leak check takes its first snapshot, and the warm-up makes every worker create its
    shared-memory arena now, so no test sees those segments appear."""
    serve = Serve(http_port=0, grpc_port=0, metrics_port=0, max_body_bytes=MAX_BODY_BYTES)
    try:
        bind_models(serve)
        serve.run()
        with httpx.Client(base_url=serve.http_url, timeout=TIMEOUT_S) as c:
            for model, body in [("add_sub", ADD_SUB), ("echo", ECHO), ("strict", X), ("lax", X)]:
                assert c.post(f"/v2/models/{model}/infer", json=body).status_code == 200
            yield c
    finally:
        serve.stop()


@pytest.fixture
def still_serving(client: httpx.Client) -> Iterator[httpx.Client]:
    """After the test's bad requests, a good one must still be answered."""
    yield client
    response = client.post("/v2/models/add_sub/infer", json=ADD_SUB)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [4.0, 6.0]


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert isinstance(error, str)
    return error


def post(client: httpx.Client, model: str, **kwargs: Any) -> httpx.Response:
    return client.post(f"/v2/models/{model}/infer", **kwargs)


def binary_request(document: dict[str, Any], *buffers: bytes) -> tuple[bytes, dict[str, str]]:
    header = json.dumps(document).encode()
    return header + b"".join(buffers), {"Inference-Header-Content-Length": str(len(header))}


def binary_input(name: str, shape: list[int], size: int, datatype: str = "FP32") -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "parameters": {"binary_data_size": size}}


TWO_FLOATS = np.array([1, 2], dtype=np.float32).tobytes()


# -- the request body ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"inputs": [', "malformed JSON"),
        (b"\xff\xfe", "malformed JSON"),
        (b"[1, 2]", "must be a JSON object, got list"),
        (b'"inputs"', "must be a JSON object, got str"),
        (b"{}", "model 'add_sub' v1 needs an 'inputs' list"),
        (b'{"inputs": {"a": 1}}', "model 'add_sub' v1 needs an 'inputs' list, got dict"),
    ],
    ids=["truncated", "not-utf8", "list", "string", "no-inputs", "inputs-not-a-list"],
)
def test_unparseable_body_is_400(still_serving: httpx.Client, body: bytes, message: str) -> None:
    assert message in error_of(post(still_serving, "add_sub", content=body), 400)


# -- inputs against the model's spec ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (
            [vector("a", [1, 2], "INT32"), vector("b", [3, 4])],
            "input 'a' of model 'add_sub' v1: expected FP32 shape [-1, -1], got INT32 [1, 2]",
        ),
        (
            [{"name": "a", "datatype": "FP32", "shape": [1, 1, 2], "data": [1, 2]}, vector("b", [3, 4])],
            "input 'a' of model 'add_sub' v1: expected FP32 shape [-1, -1], got FP32 [1, 1, 2]",
        ),
        (
            [{"name": "a", "datatype": "FP32", "shape": [1, 3], "data": [1, 2]}, vector("b", [3, 4])],
            "input 'a' of model 'add_sub' v1: 'data' holds 2 elements but shape [1, 3] needs 3",
        ),
        ([vector("a", [1, 2]), vector("b", [3, 4]), vector("c", [5, 6])], "model 'add_sub' v1 has no input 'c'"),
        ([vector("a", [1, 2])], "model 'add_sub' v1: missing required input 'b'"),
        ([vector("a", [1, 2]), vector("a", [1, 2]), vector("b", [3, 4])], "input 'a' of model 'add_sub' v1 is given"),
        (
            [vector("a", [1, 2], rows=1), vector("b", [3, 4], rows=2)],
            "input 'b' of model 'add_sub' v1: batch size 2 differs from 1 of input 'a'",
        ),
        (
            [vector("a", [1, 2, 3, 4, 5], rows=5), vector("b", [1, 2, 3, 4, 5], rows=5)],
            "input 'a' of model 'add_sub' v1: batch size 5 exceeds max_batch_size 4",
        ),
        (
            [vector("a", ["x", "y"]), vector("b", [3, 4])],
            "input 'a' of model 'add_sub' v1: FP32 'data' must hold numbers",
        ),
    ],
    ids=[
        "wrong-datatype",
        "wrong-shape",
        "data-size",
        "unknown-input",
        "missing-input",
        "duplicate-input",
        "mismatched-batch",
        "batch-too-large",
        "strings-for-fp32",
    ],
)
def test_inputs_not_matching_the_spec_are_400(
    still_serving: httpx.Client, inputs: list[dict[str, Any]], message: str
) -> None:
    assert message in error_of(post(still_serving, "add_sub", json={"inputs": inputs}), 400)


def test_unknown_output_is_400(still_serving: httpx.Client) -> None:
    response = post(still_serving, "add_sub", json={**ADD_SUB, "outputs": [{"name": "mul"}]})
    assert "model 'add_sub' v1 has no output 'mul'" in error_of(response, 400)


def test_unknown_model_is_404(still_serving: httpx.Client) -> None:
    assert "unknown model 'nope'" in error_of(post(still_serving, "nope", json=ADD_SUB), 404)


# -- binary framing --------------------------------------------------------------------------------------------


def test_header_length_larger_than_the_body_is_400(still_serving: httpx.Client) -> None:
    body, _ = binary_request({"inputs": [binary_input("a", [1, 2], 8), binary_input("b", [1, 2], 8)]}, TWO_FLOATS)
    headers = {"Inference-Header-Content-Length": str(len(body) + 1)}
    error = error_of(post(still_serving, "add_sub", content=body, headers=headers), 400)
    assert "Inference-Header-Content-Length" in error
    assert str(len(body)) in error


def test_header_length_not_a_number_is_400(still_serving: httpx.Client) -> None:
    response = post(still_serving, "add_sub", content=b"{}", headers={"Inference-Header-Content-Length": "ten"})
    assert "invalid Inference-Header-Content-Length 'ten'" in error_of(response, 400)


def test_binary_data_size_larger_than_what_remains_is_400(still_serving: httpx.Client) -> None:
    header = {"inputs": [binary_input("a", [1, 2], 8), binary_input("b", [1, 2], 16)]}
    body, headers = binary_request(header, TWO_FLOATS, TWO_FLOATS)
    error = error_of(post(still_serving, "add_sub", content=body, headers=headers), 400)
    assert "input 'b' of model 'add_sub' v1: binary_data_size is 16 but only 8 bytes" in error


def test_binary_data_size_not_matching_the_shape_is_400(still_serving: httpx.Client) -> None:
    header = {"inputs": [binary_input("a", [1, 2], 4), binary_input("b", [1, 2], 12)]}
    body, headers = binary_request(header, TWO_FLOATS, TWO_FLOATS)
    error = error_of(post(still_serving, "add_sub", content=body, headers=headers), 400)
    assert "input 'a' of model 'add_sub' v1: binary data holds 4 bytes but FP32 [1, 2] needs 8" in error


def test_leftover_binary_bytes_are_400(still_serving: httpx.Client) -> None:
    header = {"inputs": [binary_input("a", [1, 2], 8), binary_input("b", [1, 2], 8)]}
    body, headers = binary_request(header, TWO_FLOATS, TWO_FLOATS, b"tail")
    error = error_of(post(still_serving, "add_sub", content=body, headers=headers), 400)
    assert "model 'add_sub' v1 has 4 bytes of binary data after its inputs" in error


def test_data_and_binary_data_size_together_are_400(still_serving: httpx.Client) -> None:
    both = {**vector("a", [1, 2]), "parameters": {"binary_data_size": 8}}
    body, headers = binary_request({"inputs": [both, vector("b", [3, 4])]}, TWO_FLOATS)
    error = error_of(post(still_serving, "add_sub", content=body, headers=headers), 400)
    assert "input 'a' of model 'add_sub' v1: give only one of 'data' or parameters.binary_data_size" in error


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (struct.pack("<I", 10) + b"short", "BYTES element 0 claims 10 bytes but only 5 remain"),
        (b"\x01\x00", "BYTES data holds fewer than the 1 elements"),
        (struct.pack("<I", 1) + b"ab", "BYTES data has 1 bytes left after the 1 elements"),
    ],
    ids=["element-cut-short", "length-cut-short", "leftover"],
)
def test_bytes_framing_errors_are_400(still_serving: httpx.Client, data: bytes, message: str) -> None:
    body, headers = binary_request({"inputs": [binary_input("text", [1, 1], len(data), "BYTES")]}, data)
    error = error_of(post(still_serving, "echo", content=body, headers=headers), 400)
    assert "input 'text' of model 'echo' v1" in error
    assert message in error


# -- size limits and encodings ------------------------------------------------------------------------------


def test_body_over_max_body_bytes_is_413(still_serving: httpx.Client) -> None:
    error = error_of(post(still_serving, "add_sub", content=b" " * 4096), 413)
    assert "4096 bytes exceeds the limit of 1024 bytes (max_body_bytes)" in error


def test_chunked_body_over_max_body_bytes_is_413(still_serving: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(4):
            yield b" " * 1024

    response = post(still_serving, "add_sub", content=chunks())
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in response.request.headers
    assert "exceeds the limit of 1024 bytes (max_body_bytes)" in error_of(response, 413)


def test_chunked_body_under_the_limit_is_served(still_serving: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        document = json.dumps(ADD_SUB).encode()
        yield document[:10]
        yield document[10:]

    response = post(still_serving, "add_sub", content=chunks())
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [4.0, 6.0]


def test_gzip_bomb_is_413(still_serving: httpx.Client) -> None:
    bomb = gzip.compress(b" " * 1_000_000)
    assert len(bomb) < MAX_BODY_BYTES  # only its decompressed size is over the limit
    response = post(still_serving, "add_sub", content=bomb, headers={"Content-Encoding": "gzip"})
    assert "decompressed request body exceeds max_body_bytes 1024" in error_of(response, 413)


def test_corrupt_gzip_is_400(still_serving: httpx.Client) -> None:
    response = post(still_serving, "add_sub", content=b"not gzip", headers={"Content-Encoding": "gzip"})
    assert "corrupt compressed request body" in error_of(response, 400)


def test_unsupported_content_encoding_is_400(still_serving: httpx.Client) -> None:
    response = post(still_serving, "add_sub", content=json.dumps(ADD_SUB), headers={"Content-Encoding": "br"})
    assert "unsupported Content-Encoding 'br'" in error_of(response, 400)


# -- the bound function misbehaves --------------------------------------------------------------------------


def with_mode(mode: str) -> dict[str, Any]:
    return {**X, "parameters": {"mode": mode}}


def test_function_that_raises_is_500_and_the_next_request_succeeds(still_serving: httpx.Client) -> None:
    error = error_of(post(still_serving, "lax", json=with_mode("raise")), 500)
    assert "model 'lax' v1" in error
    assert "ValueError: boom: the model broke" in error
    response = post(still_serving, "lax", json=X)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [1.0, 2.0]


def test_function_raising_invalid_input_error_is_400(still_serving: httpx.Client) -> None:
    error = error_of(post(still_serving, "lax", json=with_mode("invalid")), 400)
    assert "model 'lax' v1" in error
    assert "x must be positive" in error


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("dtype", "output 'y' of model 'strict' v1: expected FP32, got float64"),
        ("missing", "output 'y' of model 'strict' v1: missing from the function's response"),
        ("extra", "model 'strict' v1: outputs ['z'] are not declared"),
        ("rows", "output 'y' of model 'strict' v1: expected 1 rows (the request's batch size), got shape [2, 2]"),
    ],
)
def test_strict_output_checks_are_500(still_serving: httpx.Client, mode: str, message: str) -> None:
    assert message in error_of(post(still_serving, "strict", json=with_mode(mode)), 500)


def test_without_strict_a_missing_output_is_500(still_serving: httpx.Client) -> None:
    error = error_of(post(still_serving, "lax", json=with_mode("missing")), 500)
    assert "output 'y' of model 'lax' v1: missing from the function's response" in error


def test_without_strict_a_castable_dtype_is_converted(still_serving: httpx.Client) -> None:
    response = post(still_serving, "lax", json=with_mode("dtype"))
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0] == {"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}


def test_wrong_number_of_responses_is_500(still_serving: httpx.Client) -> None:
    error = error_of(post(still_serving, "lax", json=with_mode("short")), 500)
    assert "model 'lax' v1: the function must return a list of 1 dicts (one per request), got 0 responses" in error
