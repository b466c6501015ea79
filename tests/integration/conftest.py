"""Integration fixtures: a real `Serve` on free loopback ports, stopped after the test."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from pybind_serve import Serve


@pytest.fixture
def make_serve() -> Iterator[Callable[..., Serve]]:
    started: list[Serve] = []

    def make(**options: object) -> Serve:
        options = {"http_port": 0, "metrics_port": 0, **options}
        serve = Serve(**options)  # type: ignore[arg-type]
        started.append(serve)
        return serve

    yield make
    for serve in started:
        serve.stop()


@pytest.fixture
def http() -> Iterator[Callable[[Serve], httpx.Client]]:
    clients: list[httpx.Client] = []

    def client(serve: Serve) -> httpx.Client:
        c = httpx.Client(base_url=serve.http_url, timeout=30)
        clients.append(c)
        return c

    yield client
    for c in clients:
        c.close()
