"""Compat fixtures: one real `Serve` per test module, with the example models bound, on free loopback ports
(`tests.conftest.module_server`: started once, every model warmed up, checked for leaks at module end)."""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import tritonclient.http as httpclient

from pybind_serve import Request, Serve, Tensor
from tests.conftest import module_server

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>/server.py`` from its path (the examples are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}_server", EXAMPLES / name / "server.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def echo_parameters(requests: list[Request]) -> list[dict[str, np.ndarray]]:
    """Undecorated: returns ``x``, the request's ``tag`` parameter and the names of all its parameters."""
    return [
        {
            "y": request["x"],
            "tag": np.array([[str(request.parameters.get("tag", "")).encode()]], dtype=object),
            "names": np.array([[",".join(sorted(request.parameters)).encode()]], dtype=object),
        }
        for request in requests
    ]


def bind_echo(serve: Serve) -> None:
    serve.bind(
        "echo",
        echo_parameters,
        inputs=[Tensor("x", np.float32, (-1,))],
        outputs=[Tensor("y", np.float32, (-1,)), Tensor("tag", bytes, (1,)), Tensor("names", bytes, (1,))],
    )


def warm_up(url: str) -> None:
    """One request per model, so that the front and every worker have mapped their arenas."""
    x = np.ones((1, 2), dtype=np.float32)
    calls = {"add_sub": {"a": x, "b": x}, "echo": {"x": x}, "identity": {"fp32": x, "fp16": x.astype(np.float16)}}
    calls["identity"] |= {"int8": x.astype(np.int8), "text": np.array([[b"warm"]], dtype=object)}
    with httpclient.InferenceServerClient(url, connection_timeout=10, network_timeout=30) as client:
        for model, arrays in calls.items():
            inputs = []
            for name, array in arrays.items():
                datatype = "BYTES" if array.dtype == object else httpclient.np_to_triton_dtype(array.dtype)
                inputs.append(httpclient.InferInput(name, list(array.shape), datatype))
                inputs[-1].set_data_from_numpy(array)
            client.infer(model, inputs)


def bind_all(serve: Serve) -> None:
    load_example("add_sub").bind(serve)
    load_example("identity").bind(serve)
    bind_echo(serve)


@pytest.fixture(scope="module")
def serve() -> Iterator[Serve]:
    """A running `Serve` with add_sub, identity and echo bound, and system shared memory on (as Triton has it);
    stopped, and checked for leaks, at module end."""
    up = lambda server: warm_up(f"127.0.0.1:{server.http_port}")  # noqa: E731
    with module_server(bind_all, up, system_shared_memory=True) as server:
        yield server


@pytest.fixture
def url(serve: Serve) -> str:
    """``host:port`` as tritonclient and perf_analyzer take it (no scheme)."""
    return f"127.0.0.1:{serve.http_port}"


@pytest.fixture
def grpc_url(serve: Serve) -> str:
    """The gRPC endpoint's ``host:port``."""
    assert serve.grpc_url is not None
    return serve.grpc_url


@pytest.fixture(scope="module")
def perf_analyzer() -> str:
    """The binary: $PERF_ANALYZER or the one on PATH. CI must run these tests, so there a missing one fails."""
    binary = os.environ.get("PERF_ANALYZER") or shutil.which("perf_analyzer")
    if binary and os.access(binary, os.X_OK):
        return binary
    why = f"no perf_analyzer: PERF_ANALYZER={os.environ.get('PERF_ANALYZER')!r} and none on PATH"
    if os.environ.get("CI"):
        pytest.fail(f"{why}; CI provides one through .ci/perf_analyzer.sh")
    pytest.skip(why)
