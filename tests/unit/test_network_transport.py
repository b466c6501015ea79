"""The network transport's parts without Ray: tensors packed into message parts and back (numeric, BYTES, big-endian,
empty, several requests), a worker's channel over TCP with CurveZMQ against a front's `NetworkPort`, which takes
only workers' frames; `Resources` and the actor options they give; and pybind_serve importing without Ray."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import zmq
import zmq.asyncio

from pybind_serve import ConfigurationError, ModelConfig, Resources, Tensor
from pybind_serve.cluster.pool import actor_options
from pybind_serve.front.network import NetworkPort
from pybind_serve.spec import ModelSpec
from pybind_serve.transport.channel import WorkerChannel
from pybind_serve.transport.inline import pack_group, shm_blocks, unpack_group
from pybind_serve.transport.network import FrontNetwork, new_keys, parse_parts, to_parts


@pytest.mark.parametrize(
    "arrays",
    [
        [np.arange(6, dtype=np.float32).reshape(2, 3), np.arange(3, dtype=np.float32).reshape(1, 3)],
        [np.arange(4, dtype=">i4")],  # big-endian: sent little-endian, as the shared-memory codec does
        [np.zeros((0, 3), dtype=np.float64)],
        [np.arange(10, dtype=np.int64)[::2]],  # not contiguous: copied into place
        [
            np.array([[b"ab", b""], [b"\x00" * 300, b"caf\xc3\xa9"]], dtype=object),
            np.array([[b"x", b"y"]], dtype=object),
        ],
    ],
    ids=["numeric", "big-endian", "empty", "strided", "bytes"],
)
def test_groups_survive_packing_and_unpacking(arrays: list[np.ndarray]) -> None:
    buffers: list[object] = [b"another part first"]
    desc = pack_group(arrays, buffers)
    wire = [bytes(memoryview(b)) for b in buffers]  # as the peer receives them
    for writable in (False, True):
        back = unpack_group(desc, wire, writable)
        assert [a.shape for a in back] == [a.shape for a in arrays]
        for got, sent in zip(back, arrays, strict=True):
            assert got.tolist() == sent.tolist()
            assert got.dtype == sent.dtype.newbyteorder("=") or got.dtype == sent.dtype
    if arrays[0].dtype.kind != "O":
        assert unpack_group(desc, wire, writable=True)[0].flags.writeable  # the worker may write into its inputs
        assert not unpack_group(desc, wire)[0].flags.writeable  # views of the message, read by the front only


def test_a_single_contiguous_array_is_sent_without_a_copy() -> None:
    array = np.arange(1 << 16, dtype=np.float32)
    buffers: list[object] = []
    pack_group([array], buffers)
    assert np.shares_memory(np.frombuffer(buffers[0], dtype=np.float32), array)


def test_only_shared_memory_descriptors_have_blocks_to_free() -> None:
    inline = pack_group([np.ones(2, np.float32)], [])
    assert shm_blocks({"a": inline, "b": {"block": ["seg", 0, 64], "dtype": "<f4", "shapes": [[2]]}}) == [
        ["seg", 0, 64]
    ]


def test_frames_with_buffers_become_parts_and_back() -> None:
    parts = to_parts({"op": "result", "id": 3, "buffers": [b"\x01\x02"]})
    frame = parse_parts(parts)
    assert frame["op"] == "result" and bytes(frame["buffers"][0]) == b"\x01\x02"
    assert "buffers" not in parse_parts(to_parts({"op": "hello"}))


def test_keys_are_never_printed() -> None:
    keys = new_keys()
    assert keys.secret not in repr(keys) and keys.secret not in repr(FrontNetwork("127.0.0.1", keys))
    assert FrontNetwork("::1", None).endpoint(5) == "tcp://[::1]:5"


async def _exchange(
    encrypted: bool, client_keys: bool = True, wait_s: float = 5.0
) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """A worker's channel (a thread, blocking) and a front's network port (asyncio) over TCP on loopback: the worker
    says hello, gets a batch with a tensor, answers with one; also a control frame the port must drop."""
    context = zmq.asyncio.Context()
    keys = new_keys() if encrypted else None
    port = NetworkPort(context, "tcp://127.0.0.1:0", keys.secret if keys else None)
    hellos: list[dict[str, object]] = []
    answers: list[dict[str, object]] = []
    received = asyncio.get_running_loop().create_future()

    def hello(identity: bytes, frame: dict[str, object]) -> None:
        hellos.append(frame)
        buffers: list[object] = []
        inputs = {"x": pack_group([np.arange(5, dtype=np.float32)], buffers)}
        port.send(identity, {"op": "batch", "id": 1, "inputs": inputs, "parameters": [{}], "buffers": buffers})

    def route(identity: bytes, frame: dict[str, object]) -> None:
        answers.append(frame)
        received.set_result(None)

    receiving = asyncio.ensure_future(port.receive(hello, route))
    read_fd, write_fd = os.pipe()

    def worker() -> None:
        sync = zmq.Context()
        curve = (keys.public, new_keys()) if keys and client_keys else None
        channel = WorkerChannel(sync, [port.endpoint], "w-1", read_fd, inline=True, curve=curve)
        try:
            channel.send({"op": "load", "spec": {}})  # a control call: the network port drops it
            channel.broadcast({"op": "hello", "model": "m", "version": 1, "segments": "", "pid": 7, "slots": 1})
            try:
                batch = channel.receive(int(wait_s * 1000))
            except Exception:
                return
            assert batch is not None
            (x,) = unpack_group(batch["inputs"]["x"], batch["buffers"], writable=True)
            x *= 2  # writable
            buffers: list[object] = []
            channel.send({"op": "result", "id": 1, "outputs": {"y": pack_group([x], buffers)}, "buffers": buffers})
        finally:
            channel.close(linger_ms=1000)
            sync.term()

    thread = asyncio.get_running_loop().run_in_executor(None, worker)
    with contextlib.suppress(asyncio.TimeoutError):  # none comes when the worker cannot connect
        await asyncio.wait_for(asyncio.shield(received), wait_s + 1)
    await thread
    receiving.cancel()
    await asyncio.gather(receiving, return_exceptions=True)
    os.close(read_fd)
    os.close(write_fd)
    context.term()
    return hellos, answers


@pytest.mark.parametrize("encrypted", [True, False], ids=["curve", "plain"])
def test_a_worker_serves_a_front_over_tcp(encrypted: bool) -> None:
    hellos, answers = asyncio.run(_exchange(encrypted))
    assert [h["op"] for h in hellos] == ["hello"]  # the "load" sent over the network was dropped
    (answer,) = answers
    (y,) = unpack_group(answer["outputs"]["y"], answer["buffers"])  # type: ignore[index, arg-type]
    assert y.tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]


def test_a_peer_without_the_server_key_cannot_connect() -> None:
    hellos, answers = asyncio.run(_exchange(encrypted=True, client_keys=False, wait_s=1.0))
    assert hellos == [] and answers == []


def test_resources_are_checked_and_become_actor_options() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Resources(num_cpus=-1, num_gpus="1", memory=0, custom={"": 1, "CPU": 2})  # type: ignore[arg-type]
    for word in ("num_cpus", "num_gpus", "memory", "custom"):
        assert word in str(caught.value)
    with pytest.raises(ConfigurationError, match="resources must be None or a Resources"):
        ModelConfig(resources={"num_cpus": 1})  # type: ignore[arg-type]

    def spec(config: ModelConfig) -> ModelSpec:
        return ModelSpec("m", 1, (Tensor("x", np.float32, (-1,)),), (), config)

    assert actor_options(spec(ModelConfig())) == {"num_cpus": 1.0, "num_gpus": 0.0}
    custom = Resources(num_cpus=0.5, memory=1 << 30, custom={"node_b": 1})
    assert actor_options(spec(ModelConfig(resources=custom))) == {
        "num_cpus": 0.5,
        "num_gpus": 0.0,
        "memory": 1 << 30,
        "resources": {"node_b": 1.0},
    }
    on_gpus = ModelConfig(devices=("cuda:0", "cuda:1"), instances=2)  # two instances per GPU: half a GPU each
    assert actor_options(spec(on_gpus))["num_gpus"] == 0.5
    round_trip = ModelSpec.from_wire(spec(ModelConfig(resources=custom)).to_wire())
    assert round_trip.config.resources == custom


def test_pybind_serve_imports_without_ray() -> None:
    code = "import pybind_serve, pybind_serve.cluster, sys; assert 'ray' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_without_ray_the_backend_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from pybind_serve import RayBackend, Serve, StartupError

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    server = Serve(http_port=0, grpc_port=None, metrics_port=None, backend=RayBackend())
    with pytest.raises(StartupError, match=r"pip install 'pybind_serve\[ray\]'"):
        server.run()
    with pytest.raises(ConfigurationError, match="transport must be one of"):
        RayBackend(transport="udp")
    with pytest.raises(ConfigurationError, match="backend must be a worker backend"):
        Serve(backend="ray")  # type: ignore[arg-type]


def test_node_fronts_options_are_checked() -> None:
    from pybind_serve import RayBackend

    with pytest.raises(ConfigurationError, match="node_fronts"):
        RayBackend(node_fronts="all")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="node_ports"):
        RayBackend(node_ports={"https": 0})
    with pytest.raises(ConfigurationError, match=r"node_ports\['http'\]"):
        RayBackend(node_ports={"http": 70000})
    assert "node_fronts=('a',)" in repr(RayBackend(node_fronts=["a"]))
    assert RayBackend(node_ports={"grpc": None}).node_ports == {"grpc": None}


def test_a_worker_channel_mixes_local_and_network_fronts() -> None:
    """One flag per front: the ipc ones carry descriptors, the tcp ones the bytes too (and take CurveZMQ)."""
    context: zmq.Context[Any] = zmq.Context()
    read, write = os.pipe()
    try:
        channel = WorkerChannel(context, ["inproc://a", "inproc://b"], "w", read, inline=[False, True])
        assert channel.inline_fronts == [False, True] and not channel.inline
        channel.close()
        with pytest.raises(ValueError, match="2 endpoints but 1 inline flags"):
            WorkerChannel(context, ["inproc://a", "inproc://b"], "w", read, inline=[True])
    finally:
        os.close(read)
        os.close(write)
        context.term()
