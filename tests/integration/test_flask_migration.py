"""The Flask migration example under 32 concurrent clients: the migrated app (``after.py``) answers every client
exactly as the plain Flask app (``before.py``) does, and its model saw batches larger than one.

Both apps run in this process on real threaded werkzeug servers on free loopback ports; ``after.py``'s `Serve`
(created when the module is imported) is started and stopped here.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from werkzeug.serving import make_server

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "flask_migration"
CLIENTS = 32
TIMEOUT_S = 30.0


def load(name: str) -> ModuleType:
    """``examples/flask_migration/<name>.py`` as a fresh module (its sibling ``classifier`` importable)."""
    sys.path.insert(0, str(EXAMPLE))
    try:
        spec = importlib.util.spec_from_file_location(f"flask_migration_{name}", EXAMPLE / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(EXAMPLE))


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """The WSGI ``app`` on a threaded werkzeug server (a thread per request, as ``app.run`` does)."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="werkzeug", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT_S)


def answers(url: str, payloads: list[dict[str, Any]]) -> list[tuple[int, Any]]:
    """Each payload's (status, JSON body), sent by ``CLIENTS`` threads that all start together."""
    start = threading.Barrier(CLIENTS, timeout=TIMEOUT_S)
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)

    with httpx.Client(base_url=url, timeout=TIMEOUT_S, limits=limits) as client:

        def call(chunk: list[dict[str, Any]]) -> list[tuple[int, Any]]:
            start.wait()
            return [(r.status_code, r.json()) for r in (client.post("/predict", json=p) for p in chunk)]

        with ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(call, [payloads[i::CLIENTS] for i in range(CLIENTS)]))
    answered: list[tuple[int, Any]] = [(0, None)] * len(payloads)
    for i, result in enumerate(results):
        answered[i::CLIENTS] = result
    return answered


def counter(metrics: str, name: str) -> float:
    found = re.search(rf'^{name}\{{model="classifier",version="1"\}} ([0-9.e+]+)$', metrics, re.MULTILINE)
    assert found, f"no {name} for classifier in:\n{metrics}"
    return float(found.group(1))


@pytest.fixture(scope="module")
def client_module() -> ModuleType:
    return load("client")


def test_the_migrated_app_answers_like_the_plain_one_and_batches(client_module: ModuleType) -> None:
    payloads = client_module.payloads(4 * CLIENTS)  # the example client's requests, the last one malformed
    before, after = load("before"), load("after")
    with serving(before.app) as url:
        expected = answers(url, payloads)
    try:
        after.serve.run()
        with serving(after.app) as url:
            got = answers(url, payloads)
        metrics = httpx.get(after.serve.metrics_url, timeout=TIMEOUT_S).text
    finally:
        after.serve.stop()
        after.batched_predict.close()
    assert [status for status, _ in expected] == [200] * (len(payloads) - 1) + [400]
    assert got == expected  # status and JSON body, client by client
    executions, inferences = counter(metrics, "nv_inference_exec_count"), counter(metrics, "nv_inference_count")
    assert inferences == len(payloads) - 1  # the malformed request never reached the model
    assert executions < inferences, f"no batch larger than one: {executions} executions for {inferences} requests"
