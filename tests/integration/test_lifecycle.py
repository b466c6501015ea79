"""`Serve`'s lifecycle: run / stop / context manager, live bind and unbind, worker processes, signals."""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from pybind_serve import ConfigurationError, ModelConfig, PortInUseError, Serve, StartupError, Tensor, batch
from tests.conftest import alive, children_of, wait_until

TIMEOUT_S = 10.0
REPO = Path(__file__).resolve().parents[2]
MakeServe = Callable[..., Serve]


# -- helpers ---------------------------------------------------------------------------------------------------


def segments_of_pid(pid: int) -> list[str]:
    """The /dev/shm segments of the servers a process started (other test runs may share /dev/shm)."""
    return sorted(name for name in os.listdir("/dev/shm") if name.startswith(f"pybind_serve_{pid}_"))


def refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


@batch
def add_sub(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    return {"add": a + b, "sub": a - b}


@batch
def mul_div(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    return {"add": a * b, "sub": a / b}


@batch
def whoami(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    pid = np.full(a.shape, os.getpid(), dtype=np.float32)  # exact: float32 holds every int < 2**24, pids are <= 2**22
    return {"add": pid, "sub": pid}


def bind(serve: Serve, name: str = "add_sub", fn: Any = add_sub, **config: Any) -> None:
    vector = (-1,)
    serve.bind(
        name,
        fn,
        inputs=[Tensor("a", np.float32, vector), Tensor("b", np.float32, vector)],
        outputs=[Tensor("add", np.float32, vector), Tensor("sub", np.float32, vector)],
        config=ModelConfig(max_batch_size=8, **config),
    )


BODY = {
    "inputs": [
        {"name": "a", "datatype": "FP32", "shape": [1, 2], "data": [6, 8]},
        {"name": "b", "datatype": "FP32", "shape": [1, 2], "data": [2, 4]},
    ]
}


def infer(url: str, model: str = "add_sub") -> httpx.Response:
    return httpx.post(f"{url}/v2/models/{model}/infer", json=BODY, timeout=TIMEOUT_S)


def outputs(response: httpx.Response) -> dict[str, list[float]]:
    assert response.status_code == 200, response.text
    return {output["name"]: output["data"] for output in response.json()["outputs"]}


# -- run, stop, context manager --------------------------------------------------------------------------------


def test_run_returns_ready_and_reports_the_real_ports(make_serve: MakeServe) -> None:
    serve = make_serve()
    bind(serve)
    for port in ("http_url", "grpc_url", "metrics_url"):
        with pytest.raises(StartupError, match="call run"):
            getattr(serve, port)  # port 0 is chosen only when the server starts
    assert serve.run() is serve
    assert serve.is_ready()
    assert serve.http_port > 0
    assert serve.http_url == f"http://127.0.0.1:{serve.http_port}"
    assert serve.grpc_url == f"127.0.0.1:{serve.grpc_port}"
    assert len({serve.http_port, serve.grpc_port, serve.metrics_port} - {None, 0}) == 3
    assert httpx.get(f"{serve.http_url}/v2/health/ready", timeout=TIMEOUT_S).status_code == 200
    assert outputs(infer(serve.http_url)) == {"add": [8.0, 12.0], "sub": [4.0, 4.0]}
    assert serve.metrics_url is not None
    assert httpx.get(serve.metrics_url, timeout=TIMEOUT_S).status_code == 200


@pytest.mark.parametrize("kind", ["http", "grpc", "metrics"])
def test_port_in_use_fails_fast_and_leaves_nothing_behind(make_serve: MakeServe, kind: str) -> None:
    first = make_serve().run()
    taken = getattr(first, f"{kind}_port")
    second = make_serve(**{f"{kind}_port": taken})
    bind(second)
    children, segments = children_of(os.getpid()), segments_of_pid(os.getpid())
    started = time.monotonic()
    with pytest.raises(PortInUseError, match=f"{kind} port {taken} .* already in use"):
        second.run()
    assert time.monotonic() - started < 5
    assert children_of(os.getpid()) == children
    assert segments_of_pid(os.getpid()) == segments
    assert not second.is_ready()
    assert first.is_ready()


def test_stop_is_idempotent_and_closes_the_port(make_serve: MakeServe) -> None:
    serve = make_serve()
    bind(serve)
    serve.run()
    port = serve.http_port
    assert outputs(infer(serve.http_url))["add"] == [8.0, 12.0]
    serve.stop()
    serve.stop()
    assert not serve.is_ready()
    assert refuses_connections(port)
    with pytest.raises(StartupError, match="stopped"):
        serve.run()


def test_context_manager_stops(make_serve: MakeServe) -> None:
    with make_serve() as serve:
        bind(serve)
        serve.run()
        port = serve.http_port
        assert serve.is_ready()
    assert not serve.is_ready()
    assert refuses_connections(port)


# -- bind and unbind while running ---------------------------------------------------------------------------


def test_bind_after_run_loads_the_model_live(make_serve: MakeServe) -> None:
    serve = make_serve().run()
    assert infer(serve.http_url).status_code == 404
    bind(serve)
    assert outputs(infer(serve.http_url)) == {"add": [8.0, 12.0], "sub": [4.0, 4.0]}
    assert serve.is_ready()


def test_rebinding_serves_the_new_function_without_restart(make_serve: MakeServe) -> None:
    serve = make_serve()
    bind(serve)
    serve.run()
    url = serve.http_url
    with httpx.Client(base_url=url, timeout=TIMEOUT_S) as client:
        assert outputs(client.post("/v2/models/add_sub/infer", json=BODY))["add"] == [8.0, 12.0]
        bind(serve, fn=mul_div)
        assert serve.http_url == url
        assert outputs(client.post("/v2/models/add_sub/infer", json=BODY)) == {"add": [12.0, 32.0], "sub": [3.0, 2.0]}


def test_unbind_makes_the_model_unknown_and_the_server_stays_ready(make_serve: MakeServe) -> None:
    serve = make_serve()
    bind(serve)
    bind(serve, "other")
    serve.run()
    serve.unbind("add_sub")
    response = infer(serve.http_url)
    assert response.status_code == 404
    assert "unknown model 'add_sub'" in response.json()["error"]
    assert httpx.get(f"{serve.http_url}/v2/health/ready", timeout=TIMEOUT_S).status_code == 200
    assert outputs(infer(serve.http_url, "other"))["add"] == [8.0, 12.0]


def test_unbind_of_an_unknown_name_raises(make_serve: MakeServe) -> None:
    serve = make_serve()
    bind(serve)
    with pytest.raises(ConfigurationError, match="no model 'nope' is bound"):
        serve.unbind("nope")
    with pytest.raises(ConfigurationError, match="no model 'add_sub' v2 is bound"):
        serve.unbind("add_sub", version=2)


def test_bind_lists_every_problem(make_serve: MakeServe) -> None:
    serve = make_serve()
    tensors = [Tensor("a", np.float32), Tensor("a", np.float32)]
    with pytest.raises(ConfigurationError) as caught:
        serve.bind("m", "not a function", inputs=tensors, outputs=[Tensor("y", np.float32)], version=0)  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith("bind('m') is invalid:")
    assert len(caught.value.problems) == 3
    assert "fn must be callable, a class, or a non-empty list of them, got str" in message
    assert "inputs have duplicate names: ['a', 'a']" in message
    assert "version must be an int >= 1, got 0" in message


def test_worker_processes_serve_and_show_in_the_config(make_serve: MakeServe) -> None:
    serve = make_serve()
    bind(serve, fn=whoami, instances=2)
    before = children_of(os.getpid())
    serve.run()
    workers = children_of(os.getpid()) - before  # the front and the two workers
    assert len(workers) == 3
    config = httpx.get(f"{serve.http_url}/v2/models/add_sub/config", timeout=TIMEOUT_S).json()
    assert config["instance_group"][0]["count"] == 2
    for _ in range(4):
        pid = int(outputs(infer(serve.http_url))["add"][0])
        assert pid != os.getpid()
        assert pid in workers


# -- signals to a process running serve() ------------------------------------------------------------------------

SCRIPT = """
import sys

import numpy as np

from pybind_serve import ModelConfig, Serve, Tensor, batch


@batch
def add_sub(a, b):
    return {"add": a + b, "sub": a - b}


instances = int(sys.argv[1]) or None
with Serve(http_port=0, grpc_port=0, metrics_port=None) as serve:
    vector = (-1,)
    serve.bind(
        "add_sub",
        add_sub,
        inputs=[Tensor("a", np.float32, vector), Tensor("b", np.float32, vector)],
        outputs=[Tensor("add", np.float32, vector), Tensor("sub", np.float32, vector)],
        config=ModelConfig(max_batch_size=8, instances=instances),
    )
    serve.run()
    print(serve.http_url, flush=True)
    serve.serve()
"""


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[Callable[[int], tuple[subprocess.Popen[bytes], str]]]:
    """Starts the script above (``instances`` 0 = run the function in the script's process) and returns the
    process and its URL; kills it after the test if it still runs."""
    started: list[subprocess.Popen[bytes]] = []
    script = tmp_path / "server.py"
    script.write_text(SCRIPT)

    def start(instances: int) -> tuple[subprocess.Popen[bytes], str]:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with (tmp_path / "stderr.txt").open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, str(script), str(instances)], stdout=subprocess.PIPE, stderr=stderr, env=env
            )
        started.append(process)
        return process, _read_url(process, tmp_path / "stderr.txt")

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(TIMEOUT_S)
        assert process.stdout is not None
        process.stdout.close()


def _read_url(process: subprocess.Popen[bytes], stderr: Path) -> str:
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        ready = selector.select(30)
    line = process.stdout.readline().decode().strip() if ready else ""
    assert line.startswith("http://"), f"the server printed no URL; its stderr:\n{stderr.read_text()}"
    return line


def test_sigterm_drains_and_exits_cleanly(server_process: Callable[[int], tuple[subprocess.Popen[bytes], str]]) -> None:
    process, url = server_process(0)
    front = children_of(process.pid)
    assert len(front) == 1
    assert outputs(infer(url))["add"] == [8.0, 12.0]
    process.send_signal(signal.SIGTERM)
    assert process.wait(15) == 0
    assert not any(alive(pid) for pid in front)
    assert segments_of_pid(process.pid) == []


def test_sigkill_leaves_no_process_or_segment_and_a_new_server_works(
    server_process: Callable[[int], tuple[subprocess.Popen[bytes], str]], make_serve: MakeServe
) -> None:
    process, url = server_process(2)
    assert outputs(infer(url))["add"] == [8.0, 12.0]
    orphans = children_of(process.pid)  # the front and two worker processes
    assert len(orphans) == 3
    assert segments_of_pid(process.pid)
    process.kill()
    assert process.wait(TIMEOUT_S) == -signal.SIGKILL
    assert wait_until(lambda: not any(alive(pid) for pid in orphans), 15), [p for p in orphans if alive(p)]
    # Checked before any new Serve starts: a new one sweeps the segments of dead servers itself.
    assert segments_of_pid(process.pid) == []
    # A socket file the dead server may have left in the temp dir is swept by the next start too.
    stale = Path(tempfile.gettempdir()) / f"pybind_serve_{process.pid}_{'0' * 12}.sock"
    stale.touch()
    serve = make_serve()
    bind(serve)
    serve.run()
    assert not stale.exists()
    assert outputs(infer(serve.http_url))["sub"] == [4.0, 4.0]
