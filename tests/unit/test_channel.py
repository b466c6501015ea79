"""`WorkerChannel` with several fronts: a frame says which front it came from, answers go back there, hello goes
to every front, and frames put back are handed out again first, in order (real ZeroMQ sockets, in process)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from pybind_serve.transport.channel import Empty, WorkerChannel
from pybind_serve.transport.frames import decode, encode


@pytest.fixture
def fronts() -> Iterator[tuple[list[zmq.Socket[Any]], WorkerChannel]]:
    context: zmq.Context[Any] = zmq.Context()
    routers = []
    for i in range(2):
        router = context.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.bind(f"inproc://front-{i}")
        routers.append(router)
    stop_read, stop_write = os.pipe()
    channel = WorkerChannel(context, ["inproc://front-0", "inproc://front-1"], "worker-1", stop_read)
    yield routers, channel
    channel.close()
    for router in routers:
        router.close()
    os.close(stop_read)
    os.close(stop_write)
    context.term()


def receive(router: zmq.Socket[Any]) -> dict[str, Any]:
    assert router.poll(2000)
    identity, data = router.recv_multipart()
    assert identity == b"worker-1"
    return decode(data)


def test_hello_reaches_every_front_and_answers_go_to_the_asking_one(
    fronts: tuple[list[zmq.Socket[Any]], WorkerChannel],
) -> None:
    routers, channel = fronts
    channel.broadcast({"op": "hello"})
    assert [receive(r)["op"] for r in routers] == ["hello", "hello"]
    routers[1].send_multipart([b"worker-1", encode({"op": "batch", "id": 7})])
    frame = channel.receive(2000)
    assert frame == {"op": "batch", "id": 7, "front": 1}
    channel.send({"op": "result", "id": 7}, frame["front"])
    assert receive(routers[1]) == {"op": "result", "id": 7}
    assert channel.fronts == 2


def test_frames_put_back_come_first_and_in_order(fronts: tuple[list[zmq.Socket[Any]], WorkerChannel]) -> None:
    routers, channel = fronts
    channel.broadcast({"op": "hello"})
    for router in routers:
        receive(router)
    routers[0].send_multipart([b"worker-1", encode({"op": "batch", "id": 3})])
    later = channel.receive(2000)
    assert later is not None
    channel.defer(later)
    channel.defer({"op": "free", "blocks": [], "front": 0})
    assert channel.receive(0) == {"op": "batch", "id": 3, "front": 0}
    assert channel.receive(0) == {"op": "free", "blocks": [], "front": 0}
    with pytest.raises(Empty):
        channel.receive(0)
