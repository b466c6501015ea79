"""`ConnectionPool` (the blocking HTTP transport's) against a bare HTTP/1.1 server on a loopback socket:
connections are reused, one the server dropped while idle is replaced without failing the request, many
threads share few connections, an empty answer leaves the connection usable, and reads time out."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from pybind_serve.client.transport.pool import ConnectionPool, PoolClosedError

TIMEOUT_S = 10.0


class Server:
    """Answers ``POST`` with its body (``GET`` with an empty one, after ``delay`` seconds); after
    ``requests_per_connection`` answers it closes the connection without saying so (as a server does with an
    idle keep-alive connection)."""

    def __init__(self, requests_per_connection: int = 1000) -> None:
        self.delay = threading.Event()  # set: hold GET answers until the client gave up
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests_per_connection = requests_per_connection
        self.connections = 0
        self.threads: list[threading.Thread] = []
        self.accepting = threading.Thread(target=self._accept, daemon=True)
        self.accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as reader:
            for _ in range(self.requests_per_connection):
                head = [reader.readline()]
                while head[-1] not in (b"\r\n", b""):
                    head.append(reader.readline())
                if head[-1] == b"":
                    return
                length = next((int(h.split(b":")[1]) for h in head if h.lower().startswith(b"content-length")), 0)
                body = reader.read(length)
                if head[0].startswith(b"GET") and self.delay.is_set():
                    time.sleep(0.5)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            conn.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread (close alone does not)
        self.listener.close()
        self.accepting.join(TIMEOUT_S)
        for thread in self.threads:
            thread.join(TIMEOUT_S)


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


def test_a_connection_is_reused(server: Server) -> None:
    pool = ConnectionPool("127.0.0.1", server.port)
    try:
        replies = [pool.request("POST", "/", b"%d" % i, timeout_s=TIMEOUT_S) for i in range(5)]
    finally:
        pool.close()
    assert [bytes(r.body) for r in replies] == [b"0", b"1", b"2", b"3", b"4"]
    assert all(isinstance(r.body, bytearray) and r.status == 200 for r in replies)
    assert server.connections == 1


def test_a_connection_the_server_dropped_is_replaced(server: Server) -> None:
    server.requests_per_connection = 1
    pool = ConnectionPool("127.0.0.1", server.port)
    try:
        assert [bytes(pool.request("POST", "/", b"%d" % i, timeout_s=TIMEOUT_S).body) for i in range(3)] == [
            b"0",
            b"1",
            b"2",
        ]
    finally:
        pool.close()
    assert server.connections == 3


def test_threads_share_a_few_connections(server: Server) -> None:
    pool = ConnectionPool("127.0.0.1", server.port, max_idle=4)
    try:
        with ThreadPoolExecutor(8) as executor:
            bodies = list(
                executor.map(
                    lambda i: bytes(pool.request("POST", "/", b"%d" % i, timeout_s=TIMEOUT_S).body), range(200)
                )
            )
    finally:
        pool.close()
    assert bodies == [b"%d" % i for i in range(200)]
    assert server.connections <= 200 // 2  # connections were reused, not one per request


def test_a_closed_pool_refuses_requests(server: Server) -> None:
    pool = ConnectionPool("127.0.0.1", server.port)
    pool.close()
    with pytest.raises(PoolClosedError, match="closed"):
        pool.request("GET", "/")


def test_a_server_that_is_gone_raises_os_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
    pool = ConnectionPool("127.0.0.1", port)
    with pytest.raises(ConnectionRefusedError):
        pool.request("GET", "/", timeout_s=TIMEOUT_S)
    pool.close()


def test_an_empty_answer_leaves_the_connection_ready_for_the_next_request(server: Server) -> None:
    pool = ConnectionPool("127.0.0.1", server.port)
    try:
        replies = [
            pool.request(method, "/", b"x" if method == "POST" else None, timeout_s=TIMEOUT_S)
            for method in ("GET", "POST", "GET")
        ]
    finally:
        pool.close()
    assert [bytes(r.body) for r in replies] == [b"", b"x", b""] and server.connections == 1


def test_each_request_has_its_own_timeout(server: Server) -> None:
    pool = ConnectionPool("127.0.0.1", server.port)
    try:
        assert bytes(pool.request("POST", "/", b"a", timeout_s=TIMEOUT_S).body) == b"a"  # a warm connection
        server.delay.set()
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            pool.request("GET", "/", timeout_s=0.1)
        assert time.monotonic() - started < 0.4
    finally:
        pool.close()
