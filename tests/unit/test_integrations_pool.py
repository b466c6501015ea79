"""`ConnectionPool` against a bare HTTP/1.1 server on a loopback socket: connections are reused, one the
server dropped while idle is replaced without failing the request, and many threads share few connections."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from pybind_serve.integrations.pool import ConnectionPool

TIMEOUT_S = 10.0


class Server:
    """Answers ``POST`` with its body; after ``requests_per_connection`` answers it closes the connection
    without saying so (as a server does with an idle keep-alive connection)."""

    def __init__(self, requests_per_connection: int = 1000) -> None:
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
    pool = ConnectionPool("127.0.0.1", server.port, TIMEOUT_S)
    try:
        replies = [pool.request("POST", "/", b"%d" % i) for i in range(5)]
    finally:
        pool.close()
    assert [bytes(r.body) for r in replies] == [b"0", b"1", b"2", b"3", b"4"]
    assert all(isinstance(r.body, bytearray) and r.status == 200 for r in replies)
    assert server.connections == 1


def test_a_connection_the_server_dropped_is_replaced(server: Server) -> None:
    server.requests_per_connection = 1
    pool = ConnectionPool("127.0.0.1", server.port, TIMEOUT_S)
    try:
        assert [bytes(pool.request("POST", "/", b"%d" % i).body) for i in range(3)] == [b"0", b"1", b"2"]
    finally:
        pool.close()
    assert server.connections == 3


def test_threads_share_a_few_connections(server: Server) -> None:
    pool = ConnectionPool("127.0.0.1", server.port, TIMEOUT_S, max_idle=4)
    try:
        with ThreadPoolExecutor(8) as executor:
            bodies = list(executor.map(lambda i: bytes(pool.request("POST", "/", b"%d" % i).body), range(200)))
    finally:
        pool.close()
    assert bodies == [b"%d" % i for i in range(200)]
    assert server.connections <= 200 // 2  # connections were reused, not one per request


def test_a_closed_pool_refuses_requests(server: Server) -> None:
    pool = ConnectionPool("127.0.0.1", server.port, TIMEOUT_S)
    pool.close()
    with pytest.raises(ConnectionError, match="closed"):
        pool.request("GET", "/")


def test_a_server_that_is_gone_raises_os_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
    pool = ConnectionPool("127.0.0.1", port, TIMEOUT_S)
    with pytest.raises(ConnectionRefusedError):
        pool.request("GET", "/")
    pool.close()
