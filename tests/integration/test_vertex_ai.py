"""Vertex AI's predict and health routes on a port of their own (`VertexAI`), against a real server."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from pybind_serve import ConfigurationError, ModelConfig, Serve, StartupError, Tensor, VertexAI, batch
from tests.conftest import module_server
from tests.integration.conftest import WAIT_S

AB = [Tensor("a", np.float32, (-1,)), Tensor("b", np.float32, (-1,))]
BODY = {
    "inputs": [
        {"name": "a", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]},
        {"name": "b", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]},
    ]
}


@batch
def add_sub(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    return {"add": a + b, "sub": a - b}


@batch
def double(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    return {"add": 2 * a, "sub": 2 * b}


def _bind(serve: Serve, name: str = "AddSub", fn: object = add_sub) -> None:
    outputs = [Tensor("add", np.float32, (-1,)), Tensor("sub", np.float32, (-1,))]
    serve.bind(name, fn, AB, outputs, config=ModelConfig(max_batch_size=8))  # type: ignore[arg-type]


def _warm_up(serve: Serve) -> None:
    assert httpx.post(f"{serve.http_url}/v2/models/AddSub/infer", json=BODY, timeout=WAIT_S).status_code == 200


@pytest.fixture(scope="module")
def server() -> Iterator[Serve]:
    vertex = VertexAI(port=0, predict_route="/predict", health_route="/health")
    with module_server(_bind, _warm_up, vertex_ai=vertex) as serve:
        yield serve


def _url(serve: Serve, path: str) -> str:
    return f"http://127.0.0.1:{serve.vertex_ai_port}{path}"


def test_the_predict_route_infers_on_the_only_model(server: Serve) -> None:
    answer = httpx.post(_url(server, "/predict"), json=BODY, timeout=WAIT_S)
    assert answer.status_code == 200
    outputs = {o["name"]: o["data"] for o in answer.json()["outputs"]}
    assert outputs == {"add": [2.0, 4.0, 6.0, 8.0], "sub": [0.0, 0.0, 0.0, 0.0]}


def test_the_health_route_says_ready(server: Serve) -> None:
    assert httpx.get(_url(server, "/health"), timeout=WAIT_S).status_code == 200
    assert httpx.head(_url(server, "/health"), timeout=WAIT_S).status_code == 200


def test_the_redirect_header_names_any_kserve_path(server: Serve) -> None:
    headers = {"X-Vertex-AI-Triton-Redirect": "v2/models/AddSub"}
    answer = httpx.post(_url(server, "/predict"), json={}, headers=headers, timeout=WAIT_S)
    assert answer.status_code == 405  # the redirect reached the metadata route, which is GET only
    headers = {"X-Vertex-AI-Triton-Redirect": "v2/models/AddSub/infer"}
    assert httpx.post(_url(server, "/predict"), json=BODY, headers=headers, timeout=WAIT_S).status_code == 200


def test_other_paths_are_not_served_on_the_vertex_port(server: Serve) -> None:
    answer = httpx.get(_url(server, "/v2/models/AddSub"), timeout=WAIT_S)
    assert answer.status_code == 404
    assert "/predict" in answer.json()["error"]
    assert httpx.get(_url(server, "/predict"), timeout=WAIT_S).status_code == 404  # predict is POST


def test_bad_requests_get_the_kserve_errors(server: Serve) -> None:
    answer = httpx.post(_url(server, "/predict"), content=b"{not json", timeout=WAIT_S)
    assert answer.status_code == 400 and "error" in answer.json()


def test_routes_and_port_come_from_vertex_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIP_PREDICT_ROUTE", "/v1/endpoints/e/deployedModels/m:predict")
    monkeypatch.setenv("AIP_HEALTH_ROUTE", "/v1/endpoints/e/deployedModels/m")
    monkeypatch.setenv("AIP_HTTP_PORT", "0")
    with Serve(http_port=0, grpc_port=None, metrics_port=None, vertex_ai=VertexAI()) as serve:
        _bind(serve)
        _bind(serve, "Double", double)
        serve.run()
        assert serve.vertex_ai_port
        predict = _url(serve, "/v1/endpoints/e/deployedModels/m:predict")
        answer = httpx.post(predict, json=BODY, timeout=WAIT_S)
        assert answer.status_code == 400 and "2 models are served" in answer.json()["error"]
        assert httpx.get(_url(serve, "/v1/endpoints/e/deployedModels/m"), timeout=WAIT_S).status_code == 200


def test_a_default_model_takes_predict_requests() -> None:
    vertex = VertexAI(port=0, predict_route="/p", health_route="/h", default_model="Double")
    with Serve(http_port=0, grpc_port=None, metrics_port=None, vertex_ai=vertex) as serve:
        _bind(serve)
        _bind(serve, "Double", double)
        serve.run()
        answer = httpx.post(_url(serve, "/p"), json=BODY, timeout=WAIT_S)
        assert answer.status_code == 200
        assert {o["name"]: o["data"] for o in answer.json()["outputs"]}["add"] == [2.0, 4.0, 6.0, 8.0]


def test_missing_routes_fail_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIP_PREDICT_ROUTE", raising=False)
    monkeypatch.delenv("AIP_HEALTH_ROUTE", raising=False)
    serve = Serve(http_port=0, grpc_port=None, metrics_port=None, vertex_ai=VertexAI(port=0))
    with pytest.raises(ConfigurationError, match="AIP_PREDICT_ROUTE"):
        serve.run()
    with pytest.raises(StartupError):
        serve.run()  # a Serve whose start failed is stopped
    with pytest.raises(ConfigurationError, match="vertex_ai must be a VertexAI"):
        Serve(vertex_ai=8080)  # type: ignore[arg-type]
