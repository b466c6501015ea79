"""HTTP connection limits (`Serve(max_header_bytes, max_header_count, read_timeout_s)`): what is refused (431,
408, as JSON, the connection closed) and what must still pass: headers up to the limits, keep-alive
connections, uploads that are slow but steady. (tests/faults covers the attacks themselves.)"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator

import httpx
import numpy as np
import pytest

from pybind_serve import Serve, Tensor, batch
from tests.conftest import module_server

from .conftest import WAIT_S

READ_TIMEOUT_S = 1.0
BODY = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}).encode()


@batch
def identity(x: np.ndarray) -> dict[str, np.ndarray]:
    return {"y": x}


def bind(serve: Serve) -> None:
    serve.bind("m", identity, [Tensor("x", np.float32, (-1,))], [Tensor("y", np.float32, (-1,))])


def warm_up(serve: Serve) -> None:
    assert httpx.post(f"{serve.http_url}/v2/models/m/infer", content=BODY, timeout=WAIT_S).status_code == 200


@pytest.fixture(scope="module")
def server() -> Iterator[Serve]:
    with module_server(bind, warm_up, read_timeout_s=READ_TIMEOUT_S) as serve:
        yield serve


def raw_exchange(serve: Serve, send: Callable[[socket.socket], None]) -> tuple[int, dict[str, str], bytes]:
    """Run ``send`` on a fresh connection, then read the answer: status, headers, body."""
    with socket.create_connection(("127.0.0.1", serve.http_port), timeout=WAIT_S) as sock:
        send(sock)
        reply = b""
        while b"\r\n\r\n" not in reply and (data := sock.recv(65536)):
            reply += data
        head, _, body = reply.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        while len(body) < int(headers.get("content-length", 0)) and (data := sock.recv(65536)):
            body += data
        if headers.get("connection") == "close":
            assert sock.recv(1) == b""  # and closed it is
    return int(lines[0].split()[1]), headers, body


def request_head(length: int, extra: str = "") -> bytes:
    return (
        f"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n{extra}\r\n"
    ).encode()


def test_headers_up_to_the_limits_pass(server: Serve) -> None:
    with httpx.Client(base_url=server.http_url, timeout=WAIT_S) as client:
        many = {f"x-h{i}": "v" for i in range(90)}  # with httpx's own headers: under 100
        assert client.post("/v2/models/m/infer", content=BODY, headers=many).status_code == 200
        big = {"x-big": "a" * (60 << 10)}  # under 64 KiB with the request line and the other headers
        assert client.post("/v2/models/m/infer", content=BODY, headers=big).status_code == 200


def test_too_many_headers_are_431_as_json(server: Serve) -> None:
    extra = "".join(f"X-H{i}: v\r\n" for i in range(101))
    status, headers, body = raw_exchange(server, lambda s: s.sendall(request_head(len(BODY), extra) + BODY))
    assert (status, headers["connection"]) == (431, "close")
    assert json.loads(body) == {"error": "the request has more than 100 headers"}


def test_headers_past_max_header_bytes_are_431(server: Serve) -> None:
    extra = f"X-Big: {'a' * (64 << 10)}\r\n"
    status, _, body = raw_exchange(server, lambda s: s.sendall(request_head(len(BODY), extra) + BODY))
    assert status == 431 and "exceed 65536 bytes" in json.loads(body)["error"]


def test_a_body_that_pauses_past_read_timeout_is_408(server: Serve) -> None:
    def send(sock: socket.socket) -> None:
        sock.sendall(request_head(len(BODY)) + BODY[:10])  # and nothing more

    started = time.monotonic()
    status, _, body = raw_exchange(server, send)
    assert status == 408 and "body paused for longer than read_timeout_s=1 s" in json.loads(body)["error"]
    # uvloop's clock is cached per loop turn at millisecond resolution: the timer may fire a hair early.
    assert READ_TIMEOUT_S - 0.01 <= time.monotonic() - started < READ_TIMEOUT_S + 2


def test_a_slow_but_steady_upload_is_served(server: Serve) -> None:
    def send(sock: socket.socket) -> None:  # 2.4 s in all, never pausing for 1 s
        sock.sendall(request_head(len(BODY)))
        for start in range(0, len(BODY), len(BODY) // 8 + 1):
            time.sleep(0.3)
            sock.sendall(BODY[start : start + len(BODY) // 8 + 1])

    status, _, body = raw_exchange(server, send)
    assert status == 200, body
    assert json.loads(body)["outputs"][0]["data"] == [1.0, 2.0]


def test_a_keep_alive_connection_serves_request_after_request(server: Serve) -> None:
    def send(sock: socket.socket) -> None:
        for _ in range(5):
            sock.sendall(request_head(len(BODY)) + BODY)
            reply = b""
            while b'"data":[1.0,2.0]' not in reply:
                reply += sock.recv(65536)
            time.sleep(READ_TIMEOUT_S / 2)  # idle between requests does not count against read_timeout_s
        sock.sendall(request_head(len(BODY)) + BODY)

    status, _, body = raw_exchange(server, send)
    assert status == 200, body
