"""`RemoteServe`: models bound into a running server from another process (or from the server's own process),
served like the server's own; what a client sees when that process closes, is killed, or when the server stops
or dies; a restarted front; and what is refused.

A scenario that needs a separate process (a killed remote, a remote whose server goes away) runs `REMOTE` or
`SERVER` as a script in a subprocess; the others attach from this test process, which works the same (its own
identities, segments and control lines).
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from pybind_serve import ConfigurationError, ModelConfig, RemoteServe, Serve, StartupError, Tensor, batch
from tests.conftest import alive, children_of, wait_until
from tests.integration.conftest import WAIT_S, Gate, metric
from tests.integration.test_fronts import connections

REPO = Path(__file__).resolve().parents[2]
MakeServe = Callable[..., Serve]
X, Y = [Tensor("x", np.float32, (-1,))], [Tensor("y", np.float32, (-1,))]


@batch
def double(x: np.ndarray) -> dict[str, np.ndarray]:
    return {"y": 2 * x}


@batch
def triple(x: np.ndarray) -> dict[str, np.ndarray]:
    return {"y": 3 * x}


def infer(serve: Serve, model: str, value: float = 1.0) -> httpx.Response:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [value]}]}
    return httpx.post(f"{serve.http_url}/v2/models/{model}/infer", json=body, timeout=WAIT_S)


def answer(serve: Serve, model: str, value: float = 1.0) -> float:
    response = infer(serve, model, value)
    assert response.status_code == 200, response.text
    return float(response.json()["outputs"][0]["data"][0])


def ready(serve: Serve, model: str) -> int:
    return httpx.get(f"{serve.http_url}/v2/models/{model}/ready", timeout=WAIT_S).status_code


def index(serve: Serve) -> dict[str, str]:
    rows = httpx.post(f"{serve.http_url}/v2/repository/index", json={}, timeout=WAIT_S).json()
    return {row["name"]: row["state"] for row in rows}


# -- in this process -------------------------------------------------------------------------------------------


def test_remote_models_are_served_beside_the_servers_own(make_serve: MakeServe) -> None:
    server = make_serve()
    server.bind("local", double, X, Y)
    server.run()
    remote = RemoteServe(f"localhost:{server.http_port}")
    remote.bind("remote", triple, X, Y, config=ModelConfig(max_batch_size=4))  # before connect: loads on connect
    assert not remote.is_connected() and ready(server, "remote") == 404
    with remote:
        assert remote.is_connected()
        assert answer(server, "remote", 2.0) == 6.0 and answer(server, "local", 2.0) == 4.0
        assert index(server) == {"local": "READY", "remote": "READY"}
        assert server.is_ready()
        config = httpx.get(f"{server.http_url}/v2/models/remote/config", timeout=WAIT_S).json()
        assert config["max_batch_size"] == 4 and [t["name"] for t in config["input"]] == ["x"]
        stats = httpx.get(f"{server.http_url}/v2/models/remote/stats", timeout=WAIT_S).json()
        assert stats["model_stats"][0]["inference_count"] == 1
    assert not remote.is_connected()
    assert ready(server, "remote") == 404 and index(server) == {"local": "READY"}
    assert answer(server, "local", 2.0) == 4.0 and server.is_ready()
    remote.close()  # idempotent
    remote.stop()
    with pytest.raises(StartupError, match="was closed; create a new one"):
        remote.bind("again", double, X, Y)


def test_bind_after_connect_is_live_and_unbind_unloads(make_serve: MakeServe) -> None:
    server = make_serve()
    server.run()
    assert server.grpc_url is not None
    with RemoteServe(f"grpc://{server.grpc_url}") as remote:  # the gRPC port names the server as well
        remote.bind("m", double, X, Y)
        assert answer(server, "m") == 2.0
        remote.bind("m", triple, X, Y)  # re-binding replaces the function
        assert answer(server, "m") == 3.0
        remote.bind("m", double, X, Y, version=2)
        assert answer(server, "m") == 2.0
        remote.unbind("m", version=2)
        assert ready(server, "m") == 200 and answer(server, "m") == 3.0
        remote.unbind("m")
        assert ready(server, "m") == 404
        with pytest.raises(ConfigurationError, match="no model 'm' is bound here"):
            remote.unbind("m")
        assert server.is_ready()


def test_models_without_inputs_or_outputs_can_be_bound(make_serve: MakeServe) -> None:
    server = make_serve()
    server.bind("m1", lambda: None, [], [])  # type: ignore[arg-type,misc]  # as PyTriton's tests bind them
    server.run()
    with RemoteServe(server.http_url) as remote:
        remote.bind("m2", lambda requests: [{} for _ in requests], [], [])
        assert ready(server, "m1") == ready(server, "m2") == 200
        response = httpx.post(f"{server.http_url}/v2/models/m2/infer", json={"inputs": []}, timeout=WAIT_S)
        assert response.status_code == 200 and response.json()["outputs"] == []


def test_a_remote_binding_replaces_a_model_of_the_same_name_until_it_closes(make_serve: MakeServe) -> None:
    server = make_serve()
    server.bind("m", double, X, Y)
    server.run()
    with RemoteServe(server.http_url) as remote:
        remote.bind("m", triple, X, Y)
        assert answer(server, "m") == 3.0
    assert ready(server, "m") == 404  # as PyTriton: the name went with the remote's model
    server.unbind("m")  # the owner's binding is still its own to drop
    assert server.is_ready()


def test_close_lets_requests_in_flight_finish(make_serve: MakeServe) -> None:
    server = make_serve()
    server.run()
    remote = RemoteServe(server.http_url).connect()
    with ThreadPoolExecutor(2) as pool, Gate() as gate:

        @batch
        def held(x: np.ndarray) -> dict[str, np.ndarray]:
            gate.hold()
            return {"y": x}

        remote.bind("held", held, X, Y)
        request = pool.submit(infer, server, "held", 5.0)
        assert gate.entered.wait(WAIT_S)
        closing = pool.submit(remote.close)
        time.sleep(0.3)
        assert not closing.done()  # it waits for the request in flight
        gate.open()
        response = request.result(WAIT_S)
        closing.result(WAIT_S)
    assert response.status_code == 200 and response.json()["outputs"][0]["data"] == [5.0]
    assert ready(server, "held") == 404


def test_a_restarted_front_gets_the_remote_models_back(make_serve: MakeServe) -> None:
    server = make_serve(fronts=2)
    server.run()
    with RemoteServe(server.http_url) as remote:
        remote.bind("m", double, X, Y, config=ModelConfig(instances=2))
        assert server._fronts is not None
        killed = server._fronts.pids[1]
        os.kill(killed, signal.SIGKILL)
        assert wait_until(lambda: server._fronts is not None and server._fronts.pids[1] != killed, WAIT_S)

        assert wait_until(lambda: statuses_on_every_front(server) == [200, 200], WAIT_S, 0.1)


def statuses_on_every_front(serve: Serve) -> list[int]:
    body = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1]}]}'
    statuses = []
    for connection in connections(serve):
        connection.request("POST", "/v2/models/m/infer", body)
        response = connection.getresponse()
        response.read()
        statuses.append(response.status)
        connection.close()
    return statuses


def test_what_is_refused(make_serve: MakeServe) -> None:
    refusing = make_serve(allow_remote=False)
    refusing.run()
    with pytest.raises(StartupError, match=r"refuses remote binding: .*Serve\(allow_remote=False\)"):
        RemoteServe(refusing.http_url).connect()
    with pytest.raises(StartupError, match="no pybind_serve server of this user on this host serves port 9"):
        RemoteServe("localhost:9", timeout_s=0.3).connect()
    with pytest.raises(ConfigurationError, match="only into a server of this host"):
        RemoteServe("http://192.0.2.1:8000").connect()
    with pytest.raises(ConfigurationError, match="timeout_s must be a number of seconds > 0"):
        RemoteServe("localhost:8000", timeout_s=0)


# -- in other processes ----------------------------------------------------------------------------------------

REMOTE = """
import pathlib, sys, time
import numpy as np
from pybind_serve import ModelConfig, RemoteServe, Tensor, batch

url, instances, started = sys.argv[1], int(sys.argv[2]) or None, pathlib.Path(sys.argv[3])

@batch
def slow(x):
    with started.open("a") as calls:
        calls.write("call\\n")
    time.sleep(float(x.ravel()[0]))
    return {"y": x}

remote = RemoteServe(url, timeout_s=20)
remote.bind("slow", slow, [Tensor("x", np.float32, (-1,))], [Tensor("y", np.float32, (-1,))],
            config=ModelConfig(max_batch_size=1, instances=instances))
remote.connect()
print("ready", flush=True)
remote.serve()
print("closed", flush=True)
"""

SERVER = """
from pybind_serve import Serve

with Serve(http_port=0, grpc_port=None, metrics_port=None) as serve:
    serve.run()
    print(serve.http_url, flush=True)
    serve.serve()
"""


@pytest.fixture
def script(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Starts a script (`REMOTE`, `SERVER`) with arguments, once it printed its first line (kept in
    ``process.first_line``); kills what still runs after the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start(source: str, *args: str) -> subprocess.Popen[bytes]:
        path = tmp_path / f"script{len(started)}.py"
        path.write_text(source)
        stderr = tmp_path / f"stderr{len(started)}.txt"
        with stderr.open("wb") as err:
            process = subprocess.Popen(
                [sys.executable, str(path), *args],
                stdout=subprocess.PIPE,
                stderr=err,
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )
        started.append(process)
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            line = process.stdout.readline().decode().strip() if selector.select(30) else ""
        assert line, f"the script printed nothing; its stderr:\n{stderr.read_text()}"
        process.first_line = line  # type: ignore[attr-defined]
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(WAIT_S)
        assert process.stdout is not None
        process.stdout.close()


def calls(started: Path) -> int:
    """How many calls of `REMOTE`'s function have started."""
    return len(started.read_text().splitlines()) if started.exists() else 0


def records_of_pid(pid: int) -> list[str]:
    """The discovery records of the servers a process made, in the temp dir."""
    return sorted(str(path) for path in Path(tempfile.gettempdir()).glob(f"pybind_serve_{pid}_*.json"))


def segments_of_pid(pid: int) -> list[str]:
    return sorted(name for name in os.listdir("/dev/shm") if name.startswith(f"pybind_serve_{pid}_"))


@pytest.mark.parametrize("instances", [0, 2], ids=["thread", "processes"])
def test_a_killed_remote_fails_its_requests_and_its_models_go(
    make_serve: MakeServe, script: Callable[..., subprocess.Popen[bytes]], tmp_path: Path, instances: int
) -> None:
    server = make_serve()
    server.bind("local", double, X, Y)
    server.run()
    started = tmp_path / "started"
    remote = script(REMOTE, server.http_url, str(instances), str(started))
    workers = children_of(remote.pid)
    assert len(workers) == instances
    with ThreadPoolExecutor(2) as pool:
        in_flight = pool.submit(infer, server, "slow", 30.0)
        assert wait_until(lambda: calls(started) == 1, WAIT_S)
        second = pool.submit(infer, server, "slow", 30.0)  # queued behind it (one thread), or in the other process
        if instances:
            assert wait_until(lambda: calls(started) == 2, WAIT_S)
        else:
            assert wait_until(lambda: metric(server, "nv_inference_pending_request_count", model="slow") == 1)
        killed_at = time.monotonic()
        remote.kill()
        first, then = in_flight.result(WAIT_S), second.result(WAIT_S)
    assert time.monotonic() - killed_at < 5  # at once, not after the 30 s the function would take
    assert first.status_code == 500 and "ended with its RemoteServe process" in first.text
    assert "the batch was lost" in first.text
    if instances:
        assert then.status_code == 500 and "the batch was lost" in then.text
    else:
        assert then.status_code == 503 and "is not ready: its worker ended with its RemoteServe process" in then.text
    assert remote.wait(WAIT_S) == -signal.SIGKILL
    assert wait_until(lambda: not any(alive(pid) for pid in workers), WAIT_S)  # its worker processes died with it
    assert ready(server, "slow") == 404 and server.is_ready() and answer(server, "local") == 2.0
    assert wait_until(lambda: segments_of_pid(remote.pid) == [], WAIT_S)  # the fronts removed its segments


def test_the_remote_process_ends_when_the_server_stops(
    make_serve: MakeServe, script: Callable[..., subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    server = make_serve(drain_timeout_s=10)
    server.run()
    started = tmp_path / "started"
    remote = script(REMOTE, server.http_url, "2", str(started))
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(infer, server, "slow", 1.0)
        assert wait_until(lambda: calls(started) == 1, WAIT_S)
        server.stop()  # drains: the remote's workers answer what they hold
        assert in_flight.result(WAIT_S).status_code == 200
    assert records_of_pid(os.getpid()) == []
    assert remote.wait(WAIT_S) == 0  # its serve() returned: it noticed the server was gone
    assert remote.stdout is not None and remote.stdout.read().decode().strip() == "closed"
    assert segments_of_pid(remote.pid) == []


def test_a_remote_closes_when_the_servers_process_dies(script: Callable[..., subprocess.Popen[bytes]]) -> None:
    server = script(SERVER)
    url: str = server.first_line  # type: ignore[attr-defined]
    remote = RemoteServe(url, timeout_s=10).connect()
    remote.bind("m", double, X, Y)
    workers = [t for t in threading.enumerate() if t.name.startswith(f"pybind_serve-{remote._id}")]
    assert len(workers) == 1
    assert len(records_of_pid(server.pid)) == 1
    server.kill()
    assert wait_until(lambda: not remote.is_connected(), WAIT_S)
    assert wait_until(lambda: records_of_pid(server.pid) == [], WAIT_S)  # its front removed it
    assert wait_until(lambda: not any(t.is_alive() for t in workers), WAIT_S)
    with pytest.raises(StartupError, match=r"is gone \(its process \(pid \d+\) ended\)"):
        remote.bind("m2", double, X, Y)
    with pytest.raises(StartupError, match="is gone"):
        remote.unbind("m")
    remote.close()  # nothing left to do
