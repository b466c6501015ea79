"""Several front processes (`Serve(fronts=2)`) seen from outside as one server: every endpoint through every
front, models and shared-memory regions the same on all, totals in /metrics and the statistics, a front that is
killed restarted while the other keeps answering, and nothing left behind.

Which front a connection reached is read from the kernel (`front_of`): the server side of the TCP connection is
a socket that one front process holds open.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from multiprocessing import resource_tracker
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.utils.shared_memory as shm
import zmq

from pybind_serve import ModelConfig, Request, Serve, Tensor, batch
from pybind_serve.transport.channel import ControlClient
from tests.conftest import module_server, wait_until
from tests.integration.conftest import WAIT_S, Gate

FRONTS = 2
resource_tracker.ensure_running()  # tritonclient's shared memory starts it: before any leak check's snapshot
ADD = ([Tensor("a", np.float32, (-1,)), Tensor("b", np.float32, (-1,))], [Tensor("sum", np.float32, (-1,))])


@batch
def add(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    return {"sum": a + b}


def _setup(serve: Serve) -> None:
    serve.bind("add", add, *ADD, config=ModelConfig(max_batch_size=8))


def _warm_up(serve: Serve) -> None:
    for connection in connections(serve):
        assert infer(connection, "add")[0] == 200
        connection.close()


@pytest.fixture(scope="module")
def server() -> Iterator[Serve]:
    with module_server(_setup, _warm_up, fronts=FRONTS, system_shared_memory=True) as serve:
        yield serve


def front_pids(serve: Serve) -> list[int]:
    assert serve._fronts is not None
    return serve._fronts.pids


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def front_of(serve: Serve, client_port: int, server_port: int) -> int:
    """The index of the front process holding the server side of the connection from ``client_port``."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        for fields in _tcp_table():
            local, remote, inode = fields[1], fields[2], int(fields[9])
            if int(local.rsplit(":", 1)[1], 16) == server_port and int(remote.rsplit(":", 1)[1], 16) == client_port:
                for index, pid in enumerate(front_pids(serve)):
                    if inode in _socket_inodes(pid):
                        return index
        time.sleep(0.01)  # accepted, but not yet taken by a front's accept()
    raise AssertionError(f"no front holds the connection from port {client_port}")


def connections(serve: Serve, count: int = FRONTS) -> list[http.client.HTTPConnection]:
    """One keep-alive HTTP connection to each of ``count`` fronts, in their order (new connections until every
    front has one)."""
    found: dict[int, http.client.HTTPConnection] = {}
    for _ in range(300):
        connection = http.client.HTTPConnection("127.0.0.1", serve.http_port, timeout=WAIT_S)
        connection.connect()
        assert connection.sock is not None
        index = front_of(serve, connection.sock.getsockname()[1], serve.http_port)
        if index in found:
            connection.close()
        else:
            found[index] = connection
        if len(found) == count:
            return [found[i] for i in range(count)]
    raise AssertionError(f"300 connections reached only fronts {sorted(found)}")


def call(connection: http.client.HTTPConnection, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    connection.request(method, path, body=data, headers={"Content-Type": "application/json"})
    answer = connection.getresponse()
    raw = answer.read()
    return answer.status, (json.loads(raw) if raw and answer.getheader("content-type", "").startswith("app") else raw)


def infer(connection: http.client.HTTPConnection, model: str, region: str | None = None) -> tuple[int, Any]:
    """Infer [1, 2] + [10, 20]; with ``region``, input a is read from that shared-memory region instead."""
    a: dict[str, Any] = {"name": "a", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}
    if region is not None:
        del a["data"]
        a["parameters"] = {"shared_memory_region": region, "shared_memory_byte_size": 8}
    b = {"name": "b", "datatype": "FP32", "shape": [1, 2], "data": [10.0, 20.0]}
    return call(connection, "POST", f"/v2/models/{model}/infer", {"inputs": [a, b]})


ENDPOINTS = [
    ("GET", "/v2/health/live", 200),
    ("GET", "/v2/health/ready", 200),
    ("GET", "/v2", 200),
    ("GET", "/v2/models/add", 200),
    ("GET", "/v2/models/add/versions/1", 200),
    ("GET", "/v2/models/add/ready", 200),
    ("GET", "/v2/models/add/config", 200),
    ("GET", "/v2/models/add/stats", 200),
    ("GET", "/v2/models/stats", 200),
    ("POST", "/v2/repository/index", 200),
    ("GET", "/v2/systemsharedmemory/status", 200),
    ("GET", "/v2/models/nothing", 404),
]


def test_every_endpoint_answers_through_every_front(server: Serve) -> None:
    for index, connection in enumerate(connections(server)):
        for method, path, status in ENDPOINTS:
            got, body = call(connection, method, path, {} if method == "POST" else None)
            assert got == status, f"front {index}: {method} {path} -> {got} {body!r}"
        status, body = infer(connection, "add")
        assert status == 200 and body["outputs"][0]["data"] == [11.0, 22.0], (index, body)
        connection.close()


def test_grpc_reaches_every_front(server: Serve) -> None:
    """Separate gRPC channels (no shared subchannel) land on both fronts, and each answers."""
    assert server.grpc_url is not None and server.grpc_port is not None
    clients = []
    try:
        for _ in range(24):
            client = grpcclient.InferenceServerClient(
                server.grpc_url, channel_args=[("grpc.use_local_subchannel_pool", 1)]
            )
            clients.append(client)
            a, b = grpcclient.InferInput("a", [1, 2], "FP32"), grpcclient.InferInput("b", [1, 2], "FP32")
            a.set_data_from_numpy(np.ones((1, 2), np.float32))
            b.set_data_from_numpy(np.ones((1, 2), np.float32))
            assert client.infer("add", [a, b]).as_numpy("sum").tolist() == [[2.0, 2.0]]
            assert client.is_model_ready("add")
        holders = {_front_holding_grpc(server, pid) for pid in front_pids(server)}
        assert holders == {True}, "a front holds no gRPC connection"
    finally:
        for client in clients:
            client.close()


def _front_holding_grpc(server: Serve, pid: int) -> bool:
    inodes = _socket_inodes(pid)
    for fields in _tcp_table():
        port, state = int(fields[1].rsplit(":", 1)[1], 16), fields[3]
        if port == server.grpc_port and state == "01" and int(fields[9]) in inodes:  # 01: ESTABLISHED
            return True
    return False


def _tcp_table() -> list[list[str]]:
    """The rows of the kernel's TCP tables, IPv4 and IPv6 (grpc may hold IPv4 connections in IPv6 sockets)."""
    rows = []
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(path) as table:
            rows += [line.split() for line in table.readlines()[1:]]
    return rows


def test_a_model_bound_or_unbound_live_is_so_on_every_front(server: Serve) -> None:
    fronts = connections(server)
    server.bind("late", add, *ADD, config=ModelConfig(max_batch_size=4))
    try:
        for connection in fronts:
            assert call(connection, "GET", "/v2/models/late/ready")[0] == 200
            assert infer(connection, "late")[0] == 200
    finally:
        server.unbind("late")
    for connection in fronts:
        assert call(connection, "GET", "/v2/models/late/ready")[0] == 404
        connection.close()


def test_a_region_registered_through_one_front_is_usable_through_the_other(server: Serve) -> None:
    first, second = connections(server)
    handle = shm.create_shared_memory_region("fronts_region", "/fronts_region", 64)
    try:
        shm.set_shared_memory_region(handle, [np.array([[5.0, 6.0]], np.float32)])
        register = {"key": "/fronts_region", "offset": 0, "byte_size": 64}
        assert call(first, "POST", "/v2/systemsharedmemory/region/fronts_region/register", register)[0] == 200
        status, regions = call(second, "GET", "/v2/systemsharedmemory/status")
        assert status == 200 and [r["name"] for r in regions] == ["fronts_region"]
        status, body = infer(second, "add", region="fronts_region")
        assert status == 200 and body["outputs"][0]["data"] == [15.0, 26.0], body
        assert call(second, "POST", "/v2/systemsharedmemory/region/fronts_region/unregister", {})[0] == 200
        assert call(first, "GET", "/v2/systemsharedmemory/status")[1] == []
        status, body = infer(first, "add", region="fronts_region")
        assert status == 400 and "fronts_region" in body["error"]
    finally:
        shm.destroy_shared_memory_region(handle)
        first.close()
        second.close()


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(f'{name}{{model="add",version="1"}}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} in {text}")


def test_metrics_and_statistics_are_totals_over_the_fronts(server: Serve) -> None:
    fronts = connections(server)
    before = call(fronts[0], "GET", "/v2/models/add/stats")[1]
    counted = before["model_stats"][0]["inference_stats"]["success"]["count"]
    for i in range(30):
        assert infer(fronts[i % FRONTS], "add")[0] == 200
    answers = [call(connection, "GET", "/v2/models/add/stats")[1]["model_stats"][0] for connection in fronts]
    for stats in answers:
        assert stats["inference_stats"]["success"]["count"] == counted + 30
        # batch_stats and last_inference are totals too: every batch of every front, the latest of them
        batches = stats["batch_stats"]
        assert sum(b["compute_infer"]["count"] for b in batches) == stats["execution_count"]
        assert sum(b["batch_size"] * b["compute_infer"]["count"] for b in batches) == stats["inference_count"]
        assert (stats["batch_stats"], stats["last_inference"]) == (
            answers[0]["batch_stats"],
            answers[0]["last_inference"],
        )
    assert answers[0]["last_inference"] > before["model_stats"][0]["last_inference"]
    assert server.metrics_url is not None
    metrics = http.client.HTTPConnection("127.0.0.1", server.metrics_port, timeout=WAIT_S)
    metrics.request("GET", "/metrics")
    text = metrics.getresponse().read().decode()
    metrics.close()
    assert _metric(text, "nv_inference_request_success") == counted + 30
    assert _metric(text, "nv_inference_count") == counted + 30
    for connection in fronts:
        connection.close()


def test_a_killed_front_is_restarted_while_the_other_keeps_answering(make_serve: Callable[..., Serve]) -> None:
    server = make_serve(fronts=FRONTS)
    _setup(server)
    server.run()
    survivor = connections_to(server, 0)  # opened before the kill: the kill must not wait for it
    before = front_pids(server)
    os.kill(before[1], signal.SIGKILL)
    try:
        served = 0
        deadline = time.monotonic() + WAIT_S
        while True:  # the other front answers while the killed one is restarted
            assert infer(survivor, "add")[0] == 200
            served += 1
            if front_pids(server)[1] != before[1] and server.is_ready():
                break
            assert time.monotonic() < deadline, "the killed front was not restarted"
        assert served > 0
        assert wait_until(lambda: server.is_ready(), WAIT_S)
        for connection in connections(server):  # the new front answers, its workers found again
            status, body = infer(connection, "add")
            assert status == 200 and body["outputs"][0]["data"] == [11.0, 22.0]
            connection.close()
    finally:
        survivor.close()


def connections_to(serve: Serve, index: int) -> http.client.HTTPConnection:
    for _ in range(200):
        connection = http.client.HTTPConnection("127.0.0.1", serve.http_port, timeout=WAIT_S)
        connection.connect()
        assert connection.sock is not None
        if front_of(serve, connection.sock.getsockname()[1], serve.http_port) == index:
            return connection
        connection.close()
    raise AssertionError(f"no connection reached front {index}")


def test_nothing_is_left_after_a_server_of_several_fronts_stops() -> None:
    serve = Serve(http_port=0, grpc_port=0, metrics_port=0, fronts=3)
    serve.bind("add", add, *ADD, config=ModelConfig(max_batch_size=4, instances=1))
    serve.run()
    pids = front_pids(serve)
    assert len(pids) == 3
    for connection in connections(serve, 3):
        assert infer(connection, "add")[0] == 200
        connection.close()
    assert serve._fronts is not None
    endpoints = [e.removeprefix("ipc://") for e in serve._fronts.endpoints]
    serve.stop()
    assert not any(os.path.exists(f"/proc/{pid}") for pid in pids)
    assert not any(os.path.exists(path) for path in endpoints)


def test_the_execution_timeout_counts_from_when_a_batch_starts_not_while_it_waits_for_another_fronts(
    make_serve: Callable[..., Serve],
) -> None:
    """One worker, two fronts: a batch of each front in turn. Each takes 0.6 s of a 1 s limit, so the second
    would have overrun had its time counted while it waited behind the first."""

    @batch
    def slow(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
        time.sleep(0.6)
        return {"sum": a + b}

    server = make_serve(fronts=FRONTS)
    server.bind("slow", slow, *ADD, config=ModelConfig(max_batch_size=1, execution_timeout_s=1.0, instances=1))
    server.run()
    fronts = connections(server)
    with ThreadPoolExecutor(FRONTS) as pool:
        answers = list(pool.map(lambda c: infer(c, "slow"), fronts))
    assert [status for status, _ in answers] == [200] * FRONTS, answers
    for connection in fronts:
        connection.close()


def test_an_async_model_with_concurrency_serves_every_front(make_serve: Callable[..., Serve]) -> None:
    @batch
    async def later(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
        await asyncio.sleep(0.05)
        return {"sum": a + b}

    server = make_serve(fronts=FRONTS)
    server.bind("later", later, *ADD, config=ModelConfig(max_batch_size=1, concurrency=4))
    server.run()
    fronts = connections(server)
    with ThreadPoolExecutor(FRONTS) as pool:
        answers = list(pool.map(lambda c: [infer(c, "later")[0] for _ in range(5)], fronts))
    assert answers == [[200] * 5] * FRONTS
    for connection in fronts:
        connection.close()


def test_batches_of_different_fronts_waiting_for_one_worker_run_as_one_call(make_serve: Callable[..., Serve]) -> None:
    """Each front forms its own batches; the ones that wait at the worker together are joined into one call (up
    to max_batch_size rows), as one front would have batched them."""
    calls: list[int] = []
    gate = Gate()

    def count(requests: list[Request]) -> list[dict[str, np.ndarray]]:
        calls.append(len(requests))
        gate.hold()  # the first call waits until the test opens the gate
        return [{"sum": r["a"] + r["b"]} for r in requests]

    server = make_serve(fronts=FRONTS)
    server.bind("count", count, *ADD, config=ModelConfig(max_batch_size=8))
    server.run()
    first, spare = connections(server)
    spare.close()
    others = connections(server)
    with ThreadPoolExecutor(3) as pool, gate:
        held = pool.submit(infer, first, "count")
        assert gate.entered.wait(WAIT_S)
        more = [pool.submit(infer, connection, "count") for connection in others]
        time.sleep(0.5)  # both reach the worker, and wait there behind the held call
        gate.open()
        assert held.result(WAIT_S)[0] == 200 and [m.result(WAIT_S)[0] for m in more] == [200, 200]
    assert calls == [1, 2]
    for connection in [first, *others]:
        connection.close()


def _infer_tagged(connection: http.client.HTTPConnection, model: str, tag: float) -> tuple[int, Any]:
    """Infer [tag, tag] + [10, 20]: the model tells requests apart by ``tag``."""
    a = {"name": "a", "datatype": "FP32", "shape": [1, 2], "data": [tag, tag]}
    b = {"name": "b", "datatype": "FP32", "shape": [1, 2], "data": [10.0, 20.0]}
    return call(connection, "POST", f"/v2/models/{model}/infer", {"inputs": [a, b]})


def _busy(control: ControlClient, model: str) -> int:
    """How many of the model's workers have a batch in flight from a front (its ``queues`` answer)."""
    reply = control.call("queues", WAIT_S)
    return next(row[3] for row in reply["models"] if row[0] == model)


def test_a_batch_formed_for_a_worker_being_drained_goes_to_another_worker(make_serve: Callable[..., Serve]) -> None:
    """Two workers, two fronts, every request through front 0. A runs on worker X and B on worker Y; meanwhile
    front 0 forms its next batch for X (X said it started A). X is drained (as autoscaling scales down): request C,
    sent then, is run by Y once B is done, not failed with 503."""
    ran: dict[float, str] = {}  # a request's tag -> the worker (thread) that ran it
    entered = {tag: threading.Event() for tag in (1.0, 2.0, 3.0)}
    release = threading.Event()

    def hold(requests: list[Request]) -> list[dict[str, np.ndarray]]:
        for request in requests:
            tag = float(request["a"].flat[0])
            ran[tag] = threading.current_thread().name.removeprefix("pybind_serve-")
            entered[tag].set()
            if tag != 3.0:
                release.wait(WAIT_S)
        return [{"sum": r["a"] + r["b"]} for r in requests]

    server = make_serve(fronts=FRONTS)
    server.bind("hold", [hold, hold], *ADD, config=ModelConfig(max_batch_size=1))  # two worker threads
    server.run()
    assert server._fronts is not None
    pairs = [connections(server) for _ in range(3)]
    ours = [pair[0] for pair in pairs]  # three connections to front 0
    for pair in pairs:
        pair[1].close()
    context: zmq.Context[Any] = zmq.Context()
    control = ControlClient(context, server._fronts.endpoints[0])
    with ThreadPoolExecutor(4) as pool:
        try:
            a = pool.submit(_infer_tagged, ours[0], "hold", 1.0)
            assert entered[1.0].wait(WAIT_S)
            b = pool.submit(_infer_tagged, ours[1], "hold", 2.0)
            assert entered[2.0].wait(WAIT_S)
            x, y = ran[1.0], ran[2.0]
            assert x != y
            drain = partial(server._fronts.call_one, 0, "drain", WAIT_S + 5, identity=x, wait_s=WAIT_S)
            drained = pool.submit(drain)
            # The owner's line to front 0 waits for the drain's answer: ask on a line of our own meanwhile.
            assert wait_until(lambda: _busy(control, "hold") == 1, WAIT_S), "front 0 did not take X out"
            c = pool.submit(_infer_tagged, ours[2], "hold", 3.0)
            wait_until(c.done, 1.0)  # before the fix: failed at once; now it waits at Y behind B
        finally:
            release.set()
        assert a.result(WAIT_S)[0] == 200 and b.result(WAIT_S)[0] == 200
        status, body = c.result(WAIT_S)
        assert status == 200, body
        assert body["outputs"][0]["data"] == [13.0, 23.0]
        assert ran[3.0] == y
        assert drained.result(WAIT_S)["drained"] is True
    control.close()
    context.term()
    for connection in ours:
        connection.close()
