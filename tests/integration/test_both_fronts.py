"""What the HTTP and gRPC fronts share, one test body for both: health, metadata, config, statistics, infer,
parameters, errors (same messages, each front's status code of the same `errors` class) and a client that
goes away.

Each front is driven through NVIDIA's client for it (`tritonclient.http` / `tritonclient.grpc`, which share
an API); a small adapter per front reads their answers into the same plain values. HTTP runs twice, with
JSON and with binary tensors.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.model_config_pb2 as triton_config
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from pybind_serve import InvalidInputError, ModelConfig, Request, Serve, Tensor, batch
from pybind_serve.errors import BatchTooLargeError, InferenceError, ModelExecutionError, ModelNotFoundError
from tests.conftest import module_server
from tests.integration.conftest import WAIT_S, Gate, wait_queued

FRONTS = ["http-json", "http-binary", "grpc"]


class Front:
    """One front, through its tritonclient; answers read into plain values."""

    def __init__(self, kind: str, serve: Serve, timeout_s: float = WAIT_S) -> None:
        self.kind, self.timeout_s = kind, timeout_s
        self.grpc = kind == "grpc"
        self.module: ModuleType = grpcclient if self.grpc else httpclient
        self.binary = kind != "http-json"
        url = serve.grpc_url if self.grpc else f"127.0.0.1:{serve.http_port}"
        timeout = {} if self.grpc else {"network_timeout": timeout_s}  # gRPC: per call, in `infer`
        self.client: Any = self.module.InferenceServerClient(url, **timeout)
        self._outputs: dict[str, list[str]] = {}

    def close(self) -> None:
        self.client.close()

    def status(self, error: type[InferenceError]) -> str:
        """How this front's tritonclient reports the status of an `errors` class."""
        return f"StatusCode.{error.grpc_code}" if self.grpc else str(error.http_status)

    def infer(self, model: str, arrays: dict[str, np.ndarray], **options: Any) -> dict[str, np.ndarray]:
        inputs = []
        for name, array in arrays.items():
            datatype = "BYTES" if array.dtype == object else self.module.np_to_triton_dtype(array.dtype)
            inputs.append(self.module.InferInput(name, list(array.shape), datatype))
            inputs[-1].set_data_from_numpy(array, **({} if self.grpc else {"binary_data": self.binary}))
        names = self.outputs(model)
        if self.grpc:
            result = self.client.infer(model, inputs, client_timeout=self.timeout_s, **options)
        else:  # ask for each output in the format this run tests
            outputs = [httpclient.InferRequestedOutput(name, binary_data=self.binary) for name in names]
            result = self.client.infer(model, inputs, outputs=outputs, **options)
        return {name: result.as_numpy(name) for name in names}

    def metadata(self, model: str) -> dict[str, Any]:
        if self.grpc:
            m = self.client.get_model_metadata(model)
            tensors = {"inputs": m.inputs, "outputs": m.outputs}
            fields = {"name": m.name, "versions": list(m.versions), "platform": m.platform}
            return fields | {k: [(t.name, t.datatype, list(t.shape)) for t in v] for k, v in tensors.items()}
        m = self.client.get_model_metadata(model)
        tensors = {k: [(t["name"], t["datatype"], t["shape"]) for t in m[k]] for k in ("inputs", "outputs")}
        return {"name": m["name"], "versions": m["versions"], "platform": m["platform"]} | tensors

    def outputs(self, model: str) -> list[str]:
        if model not in self._outputs:
            self._outputs[model] = [name for name, _, _ in self.metadata(model)["outputs"]]
        return self._outputs[model]

    def config(self, model: str) -> dict[str, Any]:
        if self.grpc:
            c = self.client.get_model_config(model).config
            dtype = triton_config.DataType.Name
            tensors = [(t.name, dtype(t.data_type), list(t.dims), t.optional) for t in c.input]
            return {"max_batch_size": c.max_batch_size, "input": tensors, "batcher": c.HasField("dynamic_batching")}
        c = self.client.get_model_config(model)
        tensors = [(t["name"], t["data_type"], t["dims"], t["optional"]) for t in c["input"]]
        return {"max_batch_size": c["max_batch_size"], "input": tensors, "batcher": "dynamic_batching" in c}

    def successes(self, model: str) -> int:
        stats = self.client.get_inference_statistics(model)
        if self.grpc:
            return int(stats.model_stats[0].inference_stats.success.count)
        return int(stats["model_stats"][0]["inference_stats"]["success"]["count"])

    def statistics(self, model: str) -> tuple[int, dict[int, dict[str, tuple[int, int]]]]:
        """``last_inference`` and ``batch_stats`` as {batch size: {duration: (count, ns)}}."""
        (stats,) = self.client.get_inference_statistics(model, **({"as_json": True} if self.grpc else {}))[
            "model_stats"
        ]
        durations = ("compute_input", "compute_infer", "compute_output")
        # gRPC's JSON form has 64-bit integers as strings, and leaves out what is zero
        batches = {
            int(entry["batch_size"]): {
                key: (int(entry[key].get("count", 0)), int(entry[key].get("ns", 0))) for key in durations
            }
            for entry in stats.get("batch_stats", [])
        }
        return int(stats.get("last_inference", 0)), batches


# -- the models ------------------------------------------------------------------------------------------------


@batch
def add_sub(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    return {"add": a + b, "sub": a - b}


@batch
def crash(x: np.ndarray) -> dict[str, np.ndarray]:
    raise ValueError("boom")


@batch
def picky(x: np.ndarray) -> dict[str, np.ndarray]:
    if (x < 0).any():
        raise InvalidInputError("x must not be negative")
    return {"y": x}


def echo(requests: list[Request]) -> list[dict[str, np.ndarray]]:
    """``text`` back, and the request's parameters as ``key=value`` strings."""
    return [
        {"text": r["text"], "params": np.array([[f"{k}={v!r}" for k, v in sorted(r.parameters.items())]], dtype=object)}
        for r in requests
    ]


def bind(serve: Serve) -> None:
    vector, four = [Tensor("a", np.float32, (-1,)), Tensor("b", np.float32, (-1,))], (4,)
    outputs = [Tensor("add", np.float32, (-1,)), Tensor("sub", np.float32, (-1,))]
    serve.bind("add_sub", add_sub, inputs=vector, outputs=outputs, config=ModelConfig(max_batch_size=8))
    serve.bind("crash", crash, inputs=[Tensor("x", np.float32, four)], outputs=[Tensor("y", np.float32, four)])
    serve.bind("picky", picky, inputs=[Tensor("x", np.int64, four)], outputs=[Tensor("y", np.int64, four)])
    text = [Tensor("text", bytes, (-1,))]
    serve.bind("echo", echo, inputs=text, outputs=[*text, Tensor("params", bytes, (-1,))])


def warm_up(serve: Serve) -> None:
    front = Front("grpc", serve)
    try:
        front.infer("add_sub", {"a": np.zeros((1, 2), np.float32), "b": np.zeros((1, 2), np.float32)})
        front.infer("picky", {"x": np.zeros((1, 4), np.int64)})
        front.infer("echo", {"text": np.array([[b"warm"]], dtype=object)})
        with pytest.raises(InferenceServerException):
            front.infer("crash", {"x": np.zeros((1, 4), np.float32)})
    finally:
        front.close()


@pytest.fixture(scope="module")
def serve() -> Iterator[Serve]:
    with module_server(bind, warm_up) as server:
        yield server


@pytest.fixture(params=FRONTS)
def front(request: pytest.FixtureRequest, serve: Serve) -> Iterator[Front]:
    front = Front(request.param, serve)
    yield front
    front.close()


A = np.arange(8, dtype=np.float32).reshape(2, 4)
B = np.full((2, 4), 0.5, dtype=np.float32)


# -- health, metadata, config, statistics ------------------------------------------------------------------


def test_health(front: Front) -> None:
    assert front.client.is_server_live()
    assert front.client.is_server_ready()
    assert front.client.is_model_ready("add_sub")
    assert not front.client.is_model_ready("no_such_model")


def test_model_metadata(front: Front) -> None:
    assert front.metadata("add_sub") == {
        "name": "add_sub",
        "versions": ["1"],
        "platform": "python",
        "inputs": [("a", "FP32", [-1, -1]), ("b", "FP32", [-1, -1])],
        "outputs": [("add", "FP32", [-1, -1]), ("sub", "FP32", [-1, -1])],
    }
    assert front.metadata("echo")["inputs"] == [("text", "BYTES", [-1, -1])]


def test_model_config(front: Front) -> None:
    assert front.config("add_sub") == {
        "max_batch_size": 8,
        "input": [("a", "TYPE_FP32", [-1], False), ("b", "TYPE_FP32", [-1], False)],
        "batcher": True,
    }
    assert front.config("picky")["input"] == [("x", "TYPE_INT64", [4], False)]


def test_statistics_count_successes(front: Front) -> None:
    before = front.successes("add_sub")
    front.infer("add_sub", {"a": A, "b": B})
    assert front.successes("add_sub") == before + 1


def test_statistics_say_when_the_model_last_ran_and_count_each_batch_size(front: Front) -> None:
    """As Triton fills them: ``last_inference`` in ms since the epoch, and ``batch_stats`` per executed batch
    size with the count and time of each of its compute phases."""
    _, before = front.statistics("add_sub")
    started_ms = time.time() * 1000
    front.infer("add_sub", {"a": A, "b": B})  # one batch of 2 rows
    last_inference, after = front.statistics("add_sub")
    assert started_ms - 1 <= last_inference <= time.time() * 1000 + 1
    assert set(before) <= set(after) and 2 in after
    zero = {key: (0, 0) for key in after[2]}
    grew = {
        key: (count - before.get(2, zero)[key][0], ns - before.get(2, zero)[key][1])
        for key, (count, ns) in after[2].items()
    }
    assert {key: count for key, (count, _) in grew.items()} == {key: 1 for key in zero}
    assert grew["compute_infer"][1] > 0 and grew["compute_input"][1] > 0
    assert {size: figures for size, figures in after.items() if size != 2} == {
        size: figures for size, figures in before.items() if size != 2
    }


# -- infer -----------------------------------------------------------------------------------------------------


def test_infer(front: Front) -> None:
    outputs = front.infer("add_sub", {"a": A, "b": B})
    np.testing.assert_array_equal(outputs["add"], A + B)
    np.testing.assert_array_equal(outputs["sub"], A - B)


def test_bytes_and_parameters_reach_the_function(front: Front) -> None:
    text = np.array([["grüße".encode(), b"b"]], dtype=object)
    parameters = {"tag": "t", "n": 7, "on": True, "x": 0.25}
    outputs = front.infer("echo", {"text": text}, parameters=parameters, priority=1, timeout=5_000_000)
    # tritonclient gives BYTES as bytes from binary data, as str from JSON (as from Triton's own server).
    expected = text.tolist() if front.binary else [[item.decode() for item in row] for row in text.tolist()]
    assert outputs["text"].tolist() == expected
    params = [p if isinstance(p, str) else p.decode() for p in outputs["params"].ravel()]
    assert params == ["n=7", "on=True", "tag='t'", "x=0.25"]


# -- errors: the same message, the status code of the same errors class ----------------------------------------

ERRORS: list[tuple[str, dict[str, np.ndarray], type[InferenceError], str]] = [
    ("no_such_model", {"x": A}, ModelNotFoundError, "unknown model 'no_such_model'; loaded models: "),
    (
        "add_sub",
        {"a": A.astype(np.float64), "b": B},
        InvalidInputError,
        "input 'a' of model 'add_sub' v1: expected FP32 shape [-1, -1], got FP64 [2, 4]",
    ),
    (
        "picky",
        {"x": np.zeros((1, 5), np.int64)},
        InvalidInputError,
        "input 'x' of model 'picky' v1: expected INT64 shape [-1, 4], got INT64 [1, 5] (the first dim is the batch",
    ),
    (
        "picky",
        {"x": np.zeros(4, np.int64)},
        InvalidInputError,
        "input 'x' of model 'picky' v1: expected INT64 shape [-1, 4], got INT64 [4] (the first dim is the batch size: "
        "the model batches, up to 16 rows; one sample of shape [4] is sent as [1, 4])",
    ),
    ("add_sub", {"a": A}, InvalidInputError, "model 'add_sub' v1: missing required input 'b'"),
    (
        "add_sub",
        {"a": np.zeros((9, 1), np.float32), "b": np.zeros((9, 1), np.float32)},
        BatchTooLargeError,
        "input 'a' of model 'add_sub' v1: batch size 9 exceeds max_batch_size 8",
    ),
    ("crash", {"x": np.zeros((1, 4), np.float32)}, ModelExecutionError, "model 'crash' v1: ValueError: boom"),
    ("picky", {"x": -np.ones((1, 4), np.int64)}, InvalidInputError, "model 'picky' v1: x must not be negative"),
]


@pytest.mark.parametrize(
    ("model", "arrays", "error", "message"),
    ERRORS,
    ids=[
        "unknown-model",
        "wrong-dtype",
        "wrong-shape",
        "no-batch-dim",
        "missing-input",
        "batch-too-large",
        "crash",
        "raised-400",
    ],
)
def test_errors(
    serve: Serve, front: Front, model: str, arrays: dict[str, np.ndarray], error: type[InferenceError], message: str
) -> None:
    with pytest.raises(InferenceServerException) as caught:
        front.client.infer(model, [_input(front, name, array) for name, array in arrays.items()])
    assert caught.value.message().startswith(message), caught.value.message()
    assert caught.value.status() == front.status(error)
    assert serve.is_ready()


def _input(front: Front, name: str, array: np.ndarray) -> Any:
    infer_input = front.module.InferInput(name, list(array.shape), front.module.np_to_triton_dtype(array.dtype))
    infer_input.set_data_from_numpy(array)
    return infer_input


# -- a client that goes away -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["http-json", "grpc"])
def test_request_of_a_client_that_went_away_is_never_run(make_serve: Callable[..., Serve], kind: str) -> None:
    calls: list[float] = []
    gate = Gate()

    @batch
    def model(x: np.ndarray) -> dict[str, np.ndarray]:
        calls.extend(x[:, 0].tolist())
        gate.hold()
        return {"y": x}

    serve = make_serve()
    serve.bind("m", model, inputs=[Tensor("x", np.float32, (1,))], outputs=[Tensor("y", np.float32, (1,))])
    serve.run()
    front, impatient = Front(kind, serve), Front(kind, serve, timeout_s=0.3)
    impatient.outputs("m")  # ask for the metadata now, not under the deadline
    x = {"x": np.zeros((1, 1), np.float32)}
    with ThreadPoolExecutor(1) as pool, gate:
        first = pool.submit(front.infer, "m", x)
        assert gate.entered.wait(WAIT_S)
        with pytest.raises((InferenceServerException, TimeoutError)):
            impatient.infer("m", {"x": np.full((1, 1), 7.0, np.float32)})
        wait_queued(serve, 0)  # the server noticed and dropped the queued request
        gate.open()
        np.testing.assert_array_equal(first.result(WAIT_S)["y"], x["x"])
    front.close()
    impatient.close()
    assert calls == [0.0]
