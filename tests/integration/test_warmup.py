"""Model warmup on a real server: every instance runs its warmups, with the shapes, dtypes and data asked for,
before it reports ready and before any request reaches it; ``bind`` / ``run`` return after them; a warmup that
raises fails them with a `StartupError` naming the model, the warmup and the error; /config reports them."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from pybind_serve import ModelConfig, Request, Serve, StartupError, Tensor, Warmup, WarmupInput, batch
from pybind_serve.client import ModelClient
from tests.integration.conftest import WAIT_S

MakeServe = Callable[..., Serve]


class Recorder:
    """A ``@batch`` function that records the inputs of each call (thread-safe) and echoes them as outputs."""

    def __init__(self) -> None:
        self.calls: list[dict[str, np.ndarray]] = []
        self._lock = threading.Lock()

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        with self._lock:
            self.calls.append({name: array.copy() for name, array in inputs.items()})
        return {f"{name}_out": array for name, array in inputs.items()}


def tensors(names_dtypes: dict[str, Any], suffix: str = "", shape: tuple[int, ...] = (-1,)) -> list[Tensor]:
    return [Tensor(name + suffix, dtype, shape) for name, dtype in names_dtypes.items()]


def test_basic_warmup_runs_before_bind_returns(make_serve: MakeServe) -> None:
    # PyTriton's test_basic_warmup_functionality: two calls of (2, 3) zeros and (2, 2) random int64.
    recorder = Recorder()
    specs = {"float_input": np.float32, "int_input": np.int64}
    warmup = Warmup(
        "basic_warmup",
        batch_size=2,
        inputs={
            "float_input": WarmupInput(np.float32, (3,), zero_data=True),
            "int_input": WarmupInput(np.int64, (2,), random_data=True),
        },
        count=2,
    )
    serve = make_serve()
    serve.bind(
        "m",
        batch(recorder),
        inputs=tensors(specs),
        outputs=tensors(specs, "_out"),
        config=ModelConfig(warmup=[warmup]),
        strict=True,
    )
    serve.run()
    assert len(recorder.calls) == 2
    for call in recorder.calls:
        assert call["float_input"].shape == (2, 3) and call["float_input"].dtype == np.float32
        assert call["int_input"].shape == (2, 2) and call["int_input"].dtype == np.int64
        assert not call["float_input"].any()
    with ModelClient(serve.http_url, "m") as client:
        result = client.infer_sample(float_input=np.array([1, 2, 3], np.float32), int_input=np.array([4, 5]))
    assert result["float_input_out"].tolist() == [1, 2, 3]
    assert len(recorder.calls) == 3  # the request came after the warmups


def test_several_warmups_run_in_order_with_their_counts_and_data(make_serve: MakeServe, tmp_path: Path) -> None:
    recorder = Recorder()
    specs = {"f": np.float16, "u": np.uint8, "flag": np.bool_, "ids": np.int64, "text": bytes}
    ids = np.array([[1, -2, 3], [40, 50, 60]], dtype=np.int64)
    np.save(tmp_path / "ids.npy", ids)  # a .npy file of the whole batch
    (tmp_path / "one.raw").write_bytes(np.array([7, 8, 9], np.int64).tobytes())  # raw bytes of one sample
    (tmp_path / "text.raw").write_bytes(b"\x02\x00\x00\x00hi")  # one BYTES element, length-prefixed
    random_all = {
        "f": WarmupInput(np.float16, (3, 4), random_data=True),
        "u": WarmupInput(np.uint8, (2,), zero_data=True),
        "flag": WarmupInput(np.bool_, (1,), random_data=True),
        "text": WarmupInput(bytes, (2,), random_data=True),
    }
    warmups = [
        Warmup("from_files", 2, {"ids": WarmupInput(np.int64, (3,), input_data_file=tmp_path / "ids.npy")}),
        Warmup(
            "one_sample",
            3,
            {
                "ids": WarmupInput(np.int64, (3,), input_data_file=str(tmp_path / "one.raw")),
                "text": WarmupInput(bytes, (1,), input_data_file=tmp_path / "text.raw"),
            },
            count=2,
        ),
        Warmup("random", 4, random_all),
    ]
    serve = make_serve()
    shapes = {"f": (-1, -1), "u": (-1,), "flag": (-1,), "ids": (-1,), "text": (-1,)}
    serve.bind(
        "m",
        batch(recorder),
        inputs=[Tensor(n, d, shapes[n]) for n, d in specs.items()],
        outputs=[Tensor(f"{n}_out", d, shapes[n]) for n, d in specs.items()],
        config=ModelConfig(warmup=warmups),
    )
    serve.run()
    assert len(recorder.calls) == 4
    first, second, third, fourth = recorder.calls
    assert set(first) == {"ids"} and first["ids"].tolist() == ids.tolist()  # inputs left out are absent
    assert second["ids"].tolist() == [[7, 8, 9]] * 3 and second["text"].tolist() == [[b"hi"]] * 3
    assert third["ids"].tolist() == second["ids"].tolist()
    assert fourth["f"].shape == (4, 3, 4) and fourth["f"].dtype == np.float16
    assert ((fourth["f"] >= 0) & (fourth["f"] < 1)).all()
    assert fourth["u"].shape == (4, 2) and fourth["u"].dtype == np.uint8 and not fourth["u"].any()
    assert fourth["flag"].shape == (4, 1) and fourth["flag"].dtype == np.bool_
    assert fourth["text"].shape == (4, 2) and all(1 <= len(item) <= 16 for item in fourth["text"].flat)


def test_a_model_that_does_not_batch_gets_exactly_the_shape(make_serve: MakeServe) -> None:
    seen: list[dict[str, tuple[int, ...]]] = []

    def fn(requests: list[Request]) -> list[dict[str, np.ndarray]]:
        seen.extend({name: array.shape for name, array in r.items()} for r in requests)
        return [{"y": r["x"]} for r in requests]

    serve = make_serve()
    warmup = Warmup("flat", 1, {"x": WarmupInput(np.float32, (2, 5), random_data=True)})
    config = ModelConfig(batching=False, warmup=[warmup])
    serve.bind("m", fn, [Tensor("x", np.float32, (-1, 5))], [Tensor("y", np.float32, (-1, 5))], config=config)
    serve.run()
    assert seen == [{"x": (2, 5)}]


def test_bind_after_run_returns_after_the_warmups(make_serve: MakeServe) -> None:
    order: list[str] = []

    @batch
    def fn(x: np.ndarray) -> dict[str, np.ndarray]:
        order.append("warmup" if x.shape[0] == 3 else "request")
        return {"y": x}

    serve = make_serve(grpc_port=None)
    serve.run()
    warmup = Warmup("w", 3, {"x": WarmupInput(np.float32, (1,), zero_data=True)}, count=4)
    serve.bind("m", fn, [Tensor("x", np.float32, (1,))], [Tensor("y", np.float32, (1,))], ModelConfig(warmup=[warmup]))
    assert order == ["warmup"] * 4
    with ModelClient(serve.http_url, "m") as client:
        client.infer_sample(x=np.ones(1, np.float32))
    assert order == ["warmup"] * 4 + ["request"]


def test_every_instance_warms_up_in_its_own_process(make_serve: MakeServe, tmp_path: Path) -> None:
    log = tmp_path / "calls.log"

    @batch
    def fn(x: np.ndarray) -> dict[str, np.ndarray]:
        with open(log, "a") as file:  # worker processes: the test reads what they did from a file
            file.write(f"{os.getpid()} {x.shape[0]}\n")
        return {"y": x}

    serve = make_serve(grpc_port=None)
    warmup = Warmup("w", 2, {"x": WarmupInput(np.float32, (1,), random_data=True)}, count=3)
    config = ModelConfig(instances=2, warmup=[warmup])
    serve.bind("m", fn, [Tensor("x", np.float32, (1,))], [Tensor("y", np.float32, (1,))], config=config)
    serve.run()
    lines = log.read_text().split()
    pids = lines[0::2]
    assert len(pids) == 6 and len(set(pids)) == 2 and all(pids.count(pid) == 3 for pid in set(pids))
    assert set(lines[1::2]) == {"2"}
    assert str(os.getpid()) not in pids


async def _async_fn(requests: list[Request]) -> list[dict[str, np.ndarray]]:
    return [{"y": r["x"]} for r in requests]


def test_decoupled_and_async_functions_warm_up(make_serve: MakeServe) -> None:
    steps: list[int] = []

    def stream(requests: list[Request]) -> Any:
        for i in range(3):
            steps.append(i)
            yield [{"y": r["x"]} for r in requests]

    warmup = Warmup("w", 1, {"x": WarmupInput(np.float32, (2,), zero_data=True)})
    serve = make_serve(grpc_port=None)
    x, y = [Tensor("x", np.float32, (2,))], [Tensor("y", np.float32, (2,))]
    serve.bind("stream", stream, x, y, ModelConfig(decoupled=True, warmup=[warmup]))
    serve.bind("async", _async_fn, x, y, ModelConfig(warmup=[warmup]))
    serve.run()
    assert steps == [0, 1, 2]
    assert serve.is_ready()


def _failing(requests: list[Request]) -> list[dict[str, np.ndarray]]:
    raise ValueError("not warm enough")


def test_a_failing_warmup_fails_run_naming_model_warmup_and_error(make_serve: MakeServe) -> None:
    serve = make_serve(grpc_port=None)
    warmup = Warmup("cold_start", 1, {"x": WarmupInput(np.float32, (2,), zero_data=True)})
    serve.bind(
        "m", _failing, [Tensor("x", np.float32, (2,))], [Tensor("y", np.float32, (2,))], ModelConfig(warmup=[warmup])
    )
    with pytest.raises(StartupError) as info:
        serve.run()
    message = str(info.value)
    assert "model 'm'" in message and "'cold_start'" in message and "ValueError: not warm enough" in message


@pytest.mark.parametrize("instances", [None, 1], ids=["thread", "process"])
def test_a_failing_warmup_fails_bind_and_the_model_is_not_bound(make_serve: MakeServe, instances: int | None) -> None:
    serve = make_serve(grpc_port=None)
    serve.run()
    warmup = Warmup("cold_start", 1, {"x": WarmupInput(np.float32, (2,), zero_data=True)})
    config = ModelConfig(instances=instances, warmup=[warmup])
    with pytest.raises(StartupError, match=r"model 'm'.*warmup 'cold_start' failed: ValueError: not warm enough"):
        serve.bind("m", _failing, [Tensor("x", np.float32, (2,))], [Tensor("y", np.float32, (2,))], config)
    assert httpx.get(f"{serve.http_url}/v2/models/m", timeout=WAIT_S).status_code == 404
    assert serve.is_ready()


def test_what_a_warmup_returns_is_discarded_unchecked(make_serve: MakeServe) -> None:
    """A warmup may give only some inputs, and the function answer only for those (PyTriton's warmups do)."""
    serve = make_serve(grpc_port=None)
    warmup = Warmup("w", 1, {"a": WarmupInput(np.float32, (2,), zero_data=True)})
    fn = batch(lambda **inputs: {f"{name}_out": array for name, array in inputs.items()})
    inputs = [Tensor("a", np.float32, (2,)), Tensor("b", np.float32, (2,))]
    outputs = [Tensor("a_out", np.float32, (2,)), Tensor("b_out", np.float32, (2,))]
    serve.bind("m", fn, inputs, outputs, ModelConfig(warmup=[warmup]), strict=True)
    serve.run()
    assert serve.is_ready()


def test_config_reports_the_warmups_over_http_and_grpc(make_serve: MakeServe, tmp_path: Path) -> None:
    data = tmp_path / "x.raw"
    data.write_bytes(np.zeros(2, np.float32).tobytes())
    warmups = [
        Warmup("zeros", 4, {"x": WarmupInput(np.float32, (2,), zero_data=True)}, count=2),
        Warmup("random", 1, {"x": WarmupInput(np.float32, (2,), random_data=True)}),
        Warmup("file", 1, {"x": WarmupInput(np.float32, (2,), input_data_file=data)}),
    ]
    serve = make_serve()
    config = ModelConfig(warmup=warmups)
    serve.bind("m", batch(lambda x: {"y": x}), [Tensor("x", np.float32, (2,))], [Tensor("y", np.float32, (2,))], config)
    serve.run()
    expected = [
        {
            "name": "zeros",
            "batch_size": 4,
            "inputs": {"x": {"data_type": "TYPE_FP32", "dims": [2], "zero_data": True}},
            "count": 2,
        },
        {
            "name": "random",
            "batch_size": 1,
            "inputs": {"x": {"data_type": "TYPE_FP32", "dims": [2], "random_data": True}},
            "count": 1,
        },
        {
            "name": "file",
            "batch_size": 1,
            "inputs": {"x": {"data_type": "TYPE_FP32", "dims": [2], "input_data_file": str(data)}},
            "count": 1,
        },
    ]
    assert httpx.get(f"{serve.http_url}/v2/models/m/config", timeout=WAIT_S).json()["model_warmup"] == expected
    assert serve.grpc_url is not None
    client = grpcclient.InferenceServerClient(serve.grpc_url)
    try:
        reported = client.get_model_config("m", as_json=True)["config"]["model_warmup"]
    finally:
        client.close()
    assert [w["name"] for w in reported] == ["zeros", "random", "file"]
    assert reported[0]["batch_size"] == 4 and reported[0]["count"] == 2
    assert reported[0]["inputs"]["x"] == {"data_type": "TYPE_FP32", "dims": ["2"], "zero_data": True}
    assert reported[2]["inputs"]["x"]["input_data_file"] == str(data)


DOCS = Path(__file__).resolve().parents[2] / "docs" / "response_cache_and_warmup.md"


@pytest.mark.parametrize("index", [0, 1], ids=["response_cache", "warmup"])
def test_the_docs_examples_run(index: int, capsys: pytest.CaptureFixture[str]) -> None:
    blocks = re.findall(r"^```python\n(.*?)^```$", DOCS.read_text(), re.MULTILINE | re.DOTALL)
    assert len(blocks) == 2
    exec(compile(blocks[index], f"{DOCS.name}#{index}", "exec"), {"__name__": f"docs_example_{index}"})
    printed = capsys.readouterr().out
    expected = ["[0.1 0.2 0.3] computed 1 time(s)", "[((8, 32, 32), 'float32'), ((8, 32, 32), 'float32')]"]
    assert printed.strip() == expected[index]
