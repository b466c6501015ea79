"""The suite's "ceiling": the least a Python HTTP server can do to answer perf_analyzer's add_sub requests.

Only the KServe v2 REST routes perf_analyzer calls (server metadata, health, model metadata and config, infer with
binary tensors), add_sub computed inline in the handler: no batching, no second process, no validation beyond
what the arithmetic needs. The suite starts it on its own interpreter (``python -m uvicorn ceiling_app:app`` in
this folder), so it runs on the very uvicorn, Starlette, uvloop and httptools as our front: the distance between
the two is our front's own cost.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

MODEL = "add_sub"
INPUTS, OUTPUTS = ("a", "b"), ("add", "sub")


def _tensors(names: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{"name": name, "datatype": "FP32", "shape": [-1, -1]} for name in names]


def _config_tensors(names: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{"name": name, "data_type": "TYPE_FP32", "dims": [-1]} for name in names]


async def server_metadata(_: Request) -> Response:
    return JSONResponse({"name": "ceiling", "version": "0", "extensions": ["binary_tensor_data"]})


async def ok(_: Request) -> Response:
    return Response(status_code=200)


async def model_metadata(_: Request) -> Response:
    tensors = {"inputs": _tensors(INPUTS), "outputs": _tensors(OUTPUTS)}
    return JSONResponse({"name": MODEL, "versions": ["1"], "platform": "python", **tensors})


async def model_config(_: Request) -> Response:
    return JSONResponse(
        {"name": MODEL, "max_batch_size": 64, "input": _config_tensors(INPUTS), "output": _config_tensors(OUTPUTS)}
    )


async def infer(request: Request) -> Response:
    body = await request.body()
    header_length = int(request.headers.get("inference-header-content-length", len(body)))
    header = json.loads(body[:header_length])
    arrays, offset = {}, header_length
    for tensor in header["inputs"]:
        if "data" in tensor:  # JSON data
            arrays[tensor["name"]] = np.asarray(tensor["data"], np.float32).reshape(tensor["shape"])
        else:  # binary data, after the JSON header in input order
            size = tensor["parameters"]["binary_data_size"]
            arrays[tensor["name"]] = np.frombuffer(body, np.float32, size // 4, offset).reshape(tensor["shape"])
            offset += size
    results = (("add", arrays["a"] + arrays["b"]), ("sub", arrays["a"] - arrays["b"]))
    outputs = [
        {"name": name, "datatype": "FP32", "shape": list(value.shape), "parameters": {"binary_data_size": value.nbytes}}
        for name, value in results
    ]
    answer = json.dumps({"model_name": MODEL, "model_version": "1", "outputs": outputs}).encode()
    return Response(
        answer + b"".join(value.tobytes() for _, value in results),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(answer))},
    )


_MODEL_PATHS = (f"/v2/models/{MODEL}", f"/v2/models/{MODEL}/versions/{{version}}")
app = Starlette(
    routes=[
        Route("/v2", server_metadata),
        Route("/v2/health/ready", ok),
        Route("/v2/health/live", ok),
        *(Route(path, model_metadata) for path in _MODEL_PATHS),
        *(Route(f"{path}/config", model_config) for path in _MODEL_PATHS),
        *(Route(f"{path}/ready", ok) for path in _MODEL_PATHS),
        *(Route(f"{path}/infer", infer, methods=["POST"]) for path in _MODEL_PATHS),
    ]
)
