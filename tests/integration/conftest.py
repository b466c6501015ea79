"""Integration fixtures: a real `Serve` on free loopback ports, stopped after the test; and the helpers that
hold a model's first call (`Gate`) and wait for requests to queue behind it (`wait_queued`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pybind_serve import Serve

WAIT_S = 10.0  # the most any request or wait of these tests may take


@pytest.fixture
def make_serve() -> Iterator[Callable[..., Serve]]:
    started: list[Serve] = []

    def make(**options: object) -> Serve:
        options = {"http_port": 0, "grpc_port": 0, "metrics_port": 0, **options}
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


class Gate:
    """Holds the model's first call until `open`, so later requests queue behind it.

    Use it as the innermost context manager (after the thread pool), so that a failing test opens it before
    the pool waits for its threads.
    """

    def __init__(self) -> None:
        self.entered = threading.Event()
        self._open = threading.Event()

    def hold(self) -> None:
        if not self.entered.is_set():
            self.entered.set()
            if not self._open.wait(WAIT_S):
                raise RuntimeError("the test never opened the gate")

    def open(self) -> None:
        self._open.set()

    def __enter__(self) -> Gate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.open()


def metric(serve: Serve, name: str, **labels: str) -> float:
    assert serve.metrics_url is not None
    text = httpx.get(serve.metrics_url, timeout=WAIT_S).text
    wanted = {"model": "m", "version": "1", **labels}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == wanted:
                return float(sample.value)
    raise AssertionError(f"no sample {name}{wanted} in:\n{text}")


def wait_queued(serve: Serve, count: int) -> None:
    """Wait until exactly ``count`` requests of model 'm' are queued (the pending-request gauge)."""
    deadline = time.monotonic() + WAIT_S
    while (queued := metric(serve, "nv_inference_pending_request_count")) != count:
        assert time.monotonic() < deadline, f"{queued:g} requests queued, expected {count}"
        time.sleep(0.01)
