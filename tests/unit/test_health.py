"""The gRPC health service's Watch, driven directly: every readiness change reaches the watcher, the last one
(the server stopping) too."""

from __future__ import annotations

import asyncio

from pybind_serve.front.health import HealthServicer
from pybind_serve.front.readiness import Readiness, ServerState
from pybind_serve.protocol.proto import health_pb2

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


def test_watch_sends_not_serving_when_the_server_stops_while_an_answer_is_out() -> None:
    """The server starts stopping while the watcher's previous answer is still being sent (the generator is
    suspended at its yield): the NOT_SERVING answer still goes out before the call ends."""

    async def scenario() -> list[int]:
        readiness = Readiness()
        readiness.open()
        watch = HealthServicer(readiness).Watch(health_pb2.HealthCheckRequest(), None)
        seen = [(await anext(watch)).status]
        readiness.stop()
        seen += [answer.status async for answer in watch]
        return seen

    assert asyncio.run(scenario()) == [SERVING, NOT_SERVING]


def test_watch_answers_each_change_of_readiness() -> None:
    async def scenario() -> list[int]:
        readiness = Readiness()  # starting: not serving yet
        watch = HealthServicer(readiness).Watch(health_pb2.HealthCheckRequest(), None)
        seen = [(await anext(watch)).status]
        readiness.open()
        seen.append((await asyncio.wait_for(anext(watch), 5)).status)
        readiness.stop()
        seen += [answer.status async for answer in watch]
        return seen

    assert asyncio.run(scenario()) == [NOT_SERVING, SERVING, NOT_SERVING]


def test_a_front_serves_only_between_open_and_stop() -> None:
    async def scenario() -> list[tuple[ServerState, bool]]:
        readiness = Readiness()
        states = [(readiness.state, readiness())]
        readiness.open()
        states.append((readiness.state, readiness()))
        readiness.stop()
        readiness.open()  # too late: a stopping front never serves again
        states.append((readiness.state, readiness()))
        return states

    assert asyncio.run(scenario()) == [
        (ServerState.STARTING, False),
        (ServerState.SERVING, True),
        (ServerState.STOPPING, False),
    ]
