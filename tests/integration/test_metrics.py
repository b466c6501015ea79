"""The Prometheus endpoint: Triton's metric names and labels, valid exposition text, and turning it off."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from pybind_serve import Serve, Tensor, batch

WAIT_S = 10.0
FAIL = 13.0  # the input value that makes the model raise

X = [Tensor("x", np.float32, (2,))]
Y = [Tensor("y", np.float32, (2,))]


@batch
def double_unless_13(x: np.ndarray) -> dict[str, np.ndarray]:
    if (x == FAIL).any():
        raise ValueError("13 is unlucky")
    time.sleep(0.001)  # so the compute duration cannot round down to 0 us
    return {"y": x * 2}


def infer(client: httpx.Client, data: list[float]) -> httpx.Response:
    body = {"inputs": [{"name": "x", "shape": [1, len(data)], "datatype": "FP32", "data": data}]}
    return client.post("/v2/models/m/infer", json=body, timeout=WAIT_S)


def value(text: str, line_start: str) -> float:
    """The value of the one sample line that starts with ``line_start`` (name and labels, exactly)."""
    matches = [line for line in text.splitlines() if line.startswith(line_start + " ")]
    assert len(matches) == 1, f"expected one line {line_start!r}, got {matches} in:\n{text}"
    return float(matches[0].rsplit(" ", 1)[1])


def test_metrics_use_triton_names_and_labels(make_serve: Callable[..., Serve]) -> None:
    serve = make_serve()
    serve.bind("m", double_unless_13, inputs=X, outputs=Y)
    serve.run()
    assert serve.metrics_url is not None
    with httpx.Client(base_url=serve.http_url) as client:
        for n in range(3):
            assert infer(client, [n, n]).status_code == 200
        bad_input = infer(client, [1.0, 2.0, 3.0])
        raising = infer(client, [FAIL, FAIL])
        text = httpx.get(serve.metrics_url, timeout=WAIT_S).text
    assert bad_input.status_code == 400, bad_input.text
    assert raising.status_code == 500, raising.text

    labels = '{model="m",version="1"}'
    assert value(text, f"nv_inference_request_success{labels}") == 3
    assert value(text, 'nv_inference_request_failure{model="m",reason="OTHER",version="1"}') == 1  # bad input
    assert value(text, 'nv_inference_request_failure{model="m",reason="BACKEND",version="1"}') == 1  # raised
    # Each request came alone, so each execution (the failed one included) ran one inference.
    executions = value(text, f"nv_inference_exec_count{labels}")
    assert value(text, f"nv_inference_count{labels}") == executions >= 3
    assert value(text, f"nv_inference_request_duration_us{labels}") > 0
    assert value(text, f"nv_inference_queue_duration_us{labels}") >= 0
    assert value(text, f"nv_inference_compute_infer_duration_us{labels}") > 0
    assert value(text, f"nv_inference_pending_request_count{labels}") == 0
    assert not re.search(r"^nv_\w+_total\b", text, re.MULTILINE), "Triton's counters have no _total suffix"

    families = {family.name: family for family in text_string_to_metric_families(text)}  # raises if invalid
    for name in ("nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count"):
        assert families[name].type == "counter"
    assert families["nv_inference_pending_request_count"].type == "gauge"
    assert families["pybind_serve_batch_size"].type == "histogram"
    # The host's: CPU always; GPU series only with NVML and a GPU (none in CI).
    assert 0 <= value(text, "nv_cpu_utilization") <= 1
    assert 0 < value(text, "nv_cpu_memory_used_bytes") < value(text, "nv_cpu_memory_total_bytes")


def test_metrics_can_be_turned_off(make_serve: Callable[..., Serve]) -> None:
    serve = make_serve(metrics_port=None)
    serve.bind("m", double_unless_13, inputs=X, outputs=Y)
    serve.run()
    assert serve.metrics_url is None and serve.metrics_port is None
    with httpx.Client(base_url=serve.http_url) as client:
        response = infer(client, [1.0, 2.0])
        assert response.status_code == 200, response.text
        assert response.json()["outputs"][0]["data"] == [2.0, 4.0]
        assert client.get("/metrics", timeout=WAIT_S).status_code == 404  # not served on the inference port
