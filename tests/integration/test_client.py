"""The client family (`pybind_serve.client`) against a real `Serve`, every class over HTTP and gRPC: samples and
batches, BYTES, parameters, headers and priority, config, readiness, load/unload, timeouts, unknown models,
and servers that cannot be reached or go away in the middle of a request.

Not tested here: a decoupled model answering with several responses, or none (the server side of decoupled
models is not done yet): the streaming clients are run against models that answer once.
"""

from __future__ import annotations

import asyncio
import doctest
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from pybind_serve import DynamicBatcher, ModelConfig, Request, Serve, Tensor, batch
from pybind_serve.client import (
    AsyncDecoupledModelClient,
    AsyncModelClient,
    DecoupledModelClient,
    FuturesModelClient,
    ModelClient,
)
from pybind_serve.client import sync as sync_module
from pybind_serve.errors import (
    ConfigurationError,
    InferenceError,
    InferenceTimeoutError,
    InvalidInputError,
    ModelNotFoundError,
    ModelNotReadyError,
    ServerUnreachableError,
    UnavailableError,
    UnsupportedError,
)
from tests.conftest import module_server
from tests.integration.conftest import WAIT_S, Gate, wait_queued

PROTOCOLS = ["http", "grpc"]
X, Y = Tensor("x", np.float32, (2,)), Tensor("y", np.float32, (2,))


# -- the models --------------------------------------------------------------------------------------------------


class Held:
    """What the tests tell the models: a gate to hold ``m`` at, and the rows ``m`` saw, in order."""

    gate: ClassVar[Gate | None] = None
    seen: ClassVar[list[float]] = []


def m(requests: list[Request]) -> list[dict[str, np.ndarray]]:
    """y = 2 x, times the request's ``factor`` parameter; records the first value of each request."""
    if Held.gate is not None:
        Held.gate.hold()
    Held.seen.extend(float(r["x"][0, 0]) for r in requests)
    return [{"y": r["x"] * 2 * r.parameters.get("factor", 1)} for r in requests]


@batch
def text(s: np.ndarray) -> dict[str, np.ndarray]:
    return {"t": np.array([[b"hello, " + v for v in row] for row in s], dtype=object)}


def slow(requests: list[Request]) -> list[dict[str, np.ndarray]]:
    time.sleep(max(r.parameters.get("sleep_s", 0.0) for r in requests))
    return [{"y": r["x"]} for r in requests]


@batch
def solo(x: np.ndarray) -> dict[str, np.ndarray]:
    return {"y": x + 1}


@batch
def add_sub(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    return {"add": a + b, "sub": a - b}


def bind(serve: Serve) -> None:
    priorities = ModelConfig(max_batch_size=8, batcher=DynamicBatcher(priority_levels=2))
    serve.bind("m", m, inputs=[X], outputs=[Y], config=priorities)
    serve.bind("text", text, inputs=[Tensor("s", bytes, (-1,))], outputs=[Tensor("t", bytes, (-1,))])
    serve.bind("slow", slow, inputs=[X], outputs=[Y])
    serve.bind("solo", solo, inputs=[X], outputs=[Y], config=ModelConfig(batching=False))
    vector = [Tensor("a", np.float32, (-1,)), Tensor("b", np.float32, (-1,))]
    outputs = [Tensor("add", np.float32, (-1,)), Tensor("sub", np.float32, (-1,))]
    serve.bind("add_sub", add_sub, inputs=vector, outputs=outputs, config=ModelConfig(max_batch_size=8))


def warm_up(serve: Serve) -> None:
    with ModelClient(serve.http_url, "m") as client:
        client.infer_sample(x=[0, 0])
    warm = [
        ("text", {"s": [b"a"]}),
        ("slow", {"x": [0, 0]}),
        ("solo", {"x": [0, 0]}),
        ("add_sub", {"a": [0], "b": [0]}),
    ]
    for name, inputs in warm:
        with ModelClient(serve.http_url, name) as client:
            client.infer_sample(**inputs)


@pytest.fixture(scope="module")
def serve() -> Iterator[Serve]:
    with module_server(bind, warm_up) as server:
        yield server


def url_of(serve: Serve, protocol: str) -> str:
    return serve.http_url if protocol == "http" else f"grpc://{serve.grpc_url}"


@pytest.fixture(params=PROTOCOLS)
def url(request: pytest.FixtureRequest, serve: Serve) -> str:
    return url_of(serve, request.param)


@pytest.fixture
def client(url: str) -> Iterator[Callable[..., ModelClient]]:
    made: list[ModelClient] = []

    def make(model: str = "m", **options: Any) -> ModelClient:
        made.append(ModelClient(url, model, **{"timeout_s": WAIT_S, **options}))
        return made[-1]

    yield make
    for c in made:
        c.close()


# -- ModelClient ---------------------------------------------------------------------------------------------------


def test_infer_sample_and_infer_batch(client: Callable[..., ModelClient]) -> None:
    model = client()
    sample = model.infer_sample(x=[1, 2])["y"]
    assert sample.dtype == np.float32 and sample.shape == (2,) and sample.tolist() == [2, 4]
    sample += 1  # the caller owns its answer
    batch_ = model.infer_batch(x=np.array([[1, 2], [3, 4]]))["y"]  # int64 in: cast to the declared FP32
    assert batch_.shape == (2, 2) and batch_.tolist() == [[2, 4], [6, 8]]
    assert model.infer_batch(np.ones((1, 2)))["y"].tolist() == [[2, 2]]  # positional: the model's input order
    assert model.infer_sample({"x": [5, 5]})["y"].tolist() == [10, 10]  # one mapping
    solo_ = client("solo")
    assert solo_.infer_sample(x=[1, 2])["y"].tolist() == [2, 3]  # no batch axis to add: the model does not batch


def test_bytes_tensors(client: Callable[..., ModelClient]) -> None:
    model = client("text")
    assert model.infer_sample(s=["wörld", b"\xff\x00"])["t"].tolist() == ["hello, wörld".encode(), b"hello, \xff\x00"]
    out = model.infer_batch(s=np.array([[b"a"], [b"b"]], dtype=object))["t"]
    assert out.dtype == object and out.tolist() == [[b"hello, a"], [b"hello, b"]]


def test_parameters_reach_the_function(client: Callable[..., ModelClient]) -> None:
    assert client().infer_sample(x=[1, 2], parameters={"factor": 3})["y"].tolist() == [6, 12]


def test_http_headers_are_sent(serve: Serve) -> None:
    # The server undoes a Content-Encoding: one that the body does not have shows the header arrived.
    with ModelClient(serve.http_url, "m", headers={"Content-Encoding": "identity"}) as model:
        assert model.infer_sample(x=[1, 1])["y"].tolist() == [2, 2]
        with pytest.raises(InvalidInputError, match="corrupt compressed request body"):
            model.infer_sample(x=[1, 1], headers={"Content-Encoding": "gzip"})


def test_higher_priority_requests_run_first(serve: Serve, url: str) -> None:
    Held.seen.clear()
    with ModelClient(url, "m", timeout_s=WAIT_S) as model, ThreadPoolExecutor(3) as pool, Gate() as gate:
        Held.gate = gate
        try:
            first = pool.submit(model.infer_sample, x=[1, 1])
            assert gate.entered.wait(WAIT_S)
            low = pool.submit(model.infer_sample, x=[3, 3], priority=2)
            wait_queued(serve, 1)
            high = pool.submit(model.infer_sample, x=[2, 2], priority=1)
            wait_queued(serve, 2)
        finally:
            Held.gate = None
            gate.open()
        assert [f.result(WAIT_S)["y"].tolist() for f in (first, high, low)] == [[2, 2], [4, 4], [6, 6]]
    assert Held.seen == [1, 2, 3]


def test_model_config_and_readiness(client: Callable[..., ModelClient]) -> None:
    model = client()
    config = model.model_config
    assert (config.name, config.max_batch_size, config.batching, config.decoupled) == ("m", 8, True, False)
    assert config.inputs == (X,) and config.outputs == (Y,)
    assert client("solo").model_config.max_batch_size == 0
    assert model.is_model_ready()
    model.wait_for_model(WAIT_S)


def test_an_unknown_model(client: Callable[..., ModelClient]) -> None:
    model = client("nope")
    with pytest.raises(ModelNotFoundError, match="nope"):
        model.infer_sample(x=[1, 2])
    with pytest.raises(ModelNotFoundError, match="nope"):
        _ = model.model_config
    assert not model.is_model_ready()
    started = time.monotonic()
    with pytest.raises(ModelNotReadyError, match=r"model 'nope' at .* was not ready within timeout_s=0.3"):
        model.wait_for_model(0.3)
    assert time.monotonic() - started < 2


def test_a_model_bound_while_waiting_for_it(serve: Serve, url: str) -> None:
    with ModelClient(url, "late") as model, ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(model.wait_for_model, WAIT_S)
        time.sleep(0.1)  # let it ask at least once before the model exists (not needed for correctness)
        serve.bind("late", solo, inputs=[X], outputs=[Y], config=ModelConfig(batching=False))
        try:
            waiting.result(WAIT_S)
            assert model.infer_sample(x=[1, 1])["y"].tolist() == [2, 2]
        finally:
            serve.unbind("late")


def test_load_and_unload_are_unsupported(client: Callable[..., ModelClient]) -> None:
    model = client()
    with pytest.raises(UnsupportedError, match="load"):
        model.load_model()
    with pytest.raises(UnsupportedError, match="unload"):
        model.unload_model()
    assert model.infer_sample(x=[1, 1])["y"].tolist() == [2, 2]


def test_a_call_times_out_and_the_client_stays_usable(client: Callable[..., ModelClient]) -> None:
    model = client("slow")
    started = time.monotonic()
    with pytest.raises(InferenceTimeoutError, match=r"model 'slow'.*timeout_s=0.3"):
        model.infer_sample(x=[1, 1], parameters={"sleep_s": 1.0}, timeout_s=0.3)
    assert time.monotonic() - started < 0.9  # not waiting for the model
    assert model.infer_sample(x=[1, 1])["y"].tolist() == [1, 1]


def test_a_closed_client_refuses_calls(client: Callable[..., ModelClient]) -> None:
    model = client()
    model.infer_sample(x=[1, 1])
    model.close()
    model.close()  # idempotent
    with pytest.raises(UnavailableError, match="closed"):
        model.infer_sample(x=[1, 1])


def test_the_readme_example_runs(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = re.search(r"^## Client\n(.*?)(?=^## )", readme, re.MULTILINE | re.DOTALL)
    assert section, "README.md has no '## Client' section"
    (code,) = re.findall(r"^```python\n(.*?)^```$", section.group(1), re.MULTILINE | re.DOTALL)
    assert code.count('"localhost:8000"') == 1
    exec(compile(code.replace('"localhost:8000"', repr(url)), "README.md#client", "exec"), {"__name__": "readme"})
    assert capsys.readouterr().out == "[4. 6.] (4, 2)\n"


def test_the_docstring_example_runs() -> None:
    result = doctest.testmod(sync_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted and not result.failed


# -- AsyncModelClient, FuturesModelClient ---------------------------------------------------------------------------


def test_async_client(url: str) -> None:
    async def main() -> None:
        async with AsyncModelClient(url, "m", timeout_s=WAIT_S) as model:
            await model.wait_for_model(WAIT_S)
            answers = await asyncio.gather(*(model.infer_sample(x=[i, i]) for i in range(16)))
            assert [a["y"].tolist() for a in answers] == [[2 * i, 2 * i] for i in range(16)]
            batch_ = await model.infer_batch(x=[[1, 2]], parameters={"factor": 2})
            assert batch_["y"].tolist() == [[4, 8]]
            assert (await model.model_config()).max_batch_size == 8 and await model.is_model_ready()
            with pytest.raises(UnsupportedError):
                await model.load_model()
        async with AsyncModelClient(url, "slow") as slow_:
            with pytest.raises(InferenceTimeoutError, match=r"timeout_s=0\.3"):
                await slow_.infer_sample(x=[1, 1], parameters={"sleep_s": 1.0}, timeout_s=0.3)
        async with AsyncModelClient(url, "nope") as nope:
            with pytest.raises(ModelNotFoundError):
                await nope.infer_sample(x=[1, 1])
            with pytest.raises(ModelNotReadyError):
                await nope.wait_for_model(0.2)
        with pytest.raises(UnavailableError, match="closed"):
            await model.infer_sample(x=[1, 1])

    asyncio.run(asyncio.wait_for(main(), 3 * WAIT_S))


def test_futures_client(url: str) -> None:
    with FuturesModelClient(url, "m", max_workers=4, timeout_s=WAIT_S) as model:
        assert model.wait_for_model(WAIT_S).result(WAIT_S) is None
        futures = [model.infer_sample(x=[i, i]) for i in range(16)]
        assert all(isinstance(f, Future) for f in futures)
        assert [f.result(WAIT_S)["y"].tolist() for f in futures] == [[2 * i, 2 * i] for i in range(16)]
        assert model.infer_batch(x=[[1, 1]], priority=1).result(WAIT_S)["y"].tolist() == [[2, 2]]
        assert model.model_config().result(WAIT_S).max_batch_size == 8
        assert isinstance(model.infer_sample(x=[1, 2, 3]).exception(WAIT_S), InvalidInputError)
        assert isinstance(model.load_model().exception(WAIT_S), UnsupportedError)
    with pytest.raises(UnavailableError, match="closed"):
        model.infer_sample(x=[1, 1])


# -- the streaming clients (ModelStreamInfer) ------------------------------------------------------------------------


def test_decoupled_client_streams_the_answers(serve: Serve) -> None:
    url = url_of(serve, "grpc")
    with DecoupledModelClient(url, "m", timeout_s=WAIT_S) as model:
        assert [a["y"].tolist() for a in model.infer_sample(x=[1, 2])] == [[2, 4]]
        assert [a["y"].tolist() for a in model.infer_batch(x=[[1, 2]], parameters={"factor": 2})] == [[[4, 8]]]
        with pytest.raises(InferenceError, match="input 'x' of model 'm'"):  # in a stream: no status code
            list(model.infer_batch(x=[[1, 2, 3]]))
    with DecoupledModelClient(url, "nope") as nope, pytest.raises(ModelNotFoundError):
        next(iter(nope.infer_sample(x=[1, 1])))
    with pytest.raises(ConfigurationError, match="needs gRPC"):
        DecoupledModelClient(serve.http_url, "m")


def test_async_decoupled_client_streams_the_answers(serve: Serve) -> None:
    async def main() -> None:
        async with AsyncDecoupledModelClient(url_of(serve, "grpc"), "text", timeout_s=WAIT_S) as model:
            answers = [a["t"].tolist() async for a in model.infer_sample(s=[b"a", b"b"])]
            assert answers == [[b"hello, a", b"hello, b"]]
            streams = []
            for i in range(3):  # one stream after the other, on one channel
                streams.append([a async for a in model.infer_batch(s=[[str(i)]])])
            assert [s[0]["t"].tolist() for s in streams] == [[[b"hello, 0"]], [[b"hello, 1"]], [[b"hello, 2"]]]

    asyncio.run(asyncio.wait_for(main(), 2 * WAIT_S))


# -- servers that are not there, or go away --------------------------------------------------------------------------


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        return int(listener.getsockname()[1])


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_server_that_is_not_there(protocol: str) -> None:
    url = f"{protocol}://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    with ModelClient(url, "m") as model, pytest.raises(ServerUnreachableError, match="cannot reach the server"):
        model.infer_sample(x=[1, 1])
    with FuturesModelClient(url, "m") as futures:
        assert isinstance(futures.infer_sample(x=[1, 1]).exception(WAIT_S), ServerUnreachableError)
    with ModelClient(url, "m") as model, pytest.raises(ServerUnreachableError, match=r"waited timeout_s=0.2"):
        model.wait_for_model(0.2)

    async def main() -> None:
        async with AsyncModelClient(url, "m") as model:
            with pytest.raises(ServerUnreachableError, match="cannot reach the server"):
                await model.infer_sample(x=[1, 1])

    asyncio.run(main())
    if protocol == "grpc":
        with DecoupledModelClient(url, "m") as stream, pytest.raises(ServerUnreachableError):
            list(stream.infer_sample(x=[1, 1]))
    assert time.monotonic() - started < WAIT_S


STUCK_SERVER = """
import time
import numpy as np
from pybind_serve import Serve, Tensor, batch

@batch
def stuck(x):
    print("called", flush=True)
    time.sleep(3)  # the test kills the server's front long before this returns
    return {"y": x}

with Serve(http_port=0, grpc_port=0, metrics_port=None) as serve:
    serve.bind("stuck", stuck, inputs=[Tensor("x", np.float32, (1,))], outputs=[Tensor("y", np.float32, (1,))])
    serve.run()
    print(serve.http_url, "grpc://" + serve.grpc_url, flush=True)
    serve.serve()
"""


def read_line(process: subprocess.Popen[bytes]) -> str:
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        assert selector.select(30), "the server script printed nothing"
    return process.stdout.readline().decode().strip()


def children_of(pid: int) -> list[int]:
    children = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            children.append(int(entry))
    return children


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_server_that_goes_away_in_the_middle_of_a_request(tmp_path: Path, protocol: str) -> None:
    script = tmp_path / "server.py"
    script.write_text(STUCK_SERVER)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, env=env)
    try:
        http_url, grpc_url = read_line(process).split()
        (front,) = children_of(process.pid)  # the model runs in the script's process: the front is the one child
        with ModelClient(http_url if protocol == "http" else grpc_url, "stuck", timeout_s=30) as model:
            model.wait_for_model(WAIT_S)
            with ThreadPoolExecutor(1) as pool:
                call = pool.submit(model.infer_sample, x=[1])
                assert read_line(process) == "called"
                started = time.monotonic()
                os.kill(process.pid, signal.SIGKILL)  # the owner first: else it would restart its front
                os.kill(front, signal.SIGKILL)
                # HTTP: the pool retries a dropped keep-alive connection once, and finds the server gone
                with pytest.raises(ServerUnreachableError, match=r"broke before the answer came|cannot reach"):
                    call.result(WAIT_S)
                assert time.monotonic() - started < 5  # noticed at once, not after timeout_s
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        assert process.stdout is not None
        process.stdout.close()


def test_errors_are_the_same_classes_for_every_client(serve: Serve) -> None:
    """One ``except`` for all: the error of an unknown model from each client class and protocol."""
    raised: list[type[InferenceError]] = []
    for protocol in PROTOCOLS:
        url = url_of(serve, protocol)
        with ModelClient(url, "nope") as model, pytest.raises(InferenceError) as sync_error:
            model.infer_sample(x=[1, 1])
        raised.append(type(sync_error.value))
        with FuturesModelClient(url, "nope") as futures:
            error = futures.infer_sample(x=[1, 1]).exception(WAIT_S)
        raised.append(type(error))  # type: ignore[arg-type]

        async def main(url: str = url) -> type[InferenceError]:
            async with AsyncModelClient(url, "nope") as model:
                with pytest.raises(InferenceError) as async_error:
                    await model.infer_sample(x=[1, 1])
            return type(async_error.value)

        raised.append(asyncio.run(main()))
    assert raised == [ModelNotFoundError] * 6
