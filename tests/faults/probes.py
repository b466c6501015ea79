"""The fault probes: each starts its own server (`harness.server`), does to it what a hostile client or a
misbehaving function would, and returns an `Outcome`: every request sent and its answer, what the server left
behind, and the figures its test asserts on. Each is bounded in requests and time.

``mode`` is where the bound functions run: ``thread`` (in the binding process, the default) or ``process``
(``instances=N`` worker processes).
"""

from __future__ import annotations

import asyncio
import gzip
import re
import select
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import grpc
import numpy as np

from .harness import (
    STOP_GRACE_S,
    Answer,
    Outcome,
    Server,
    grpc_infer,
    grpc_request,
    http_call,
    http_infer,
    memory_mib,
    server,
)
from .server import CRASH, ECHO, EXIT, HANG, HUGE_ERROR, INTERRUPT, SLOW, SLOW_S

MODES = ("thread", "process")
DRAIN_S = 2.0
TIMEOUT_S = 1.0  # execution_timeout_s of the probes that need one


def _instances(mode: str, count: int = 1) -> dict[str, Any]:
    return {"instances": None if mode == "thread" else count}


# -- the bound function misbehaves ----------------------------------------------------------------------------


def user_exit(mode: str) -> Outcome:
    """The function calls sys.exit() or raises KeyboardInterrupt; then ordinary requests follow, over both
    protocols. Needed: those two fail with a clear error, every other request is served, the model stays ready."""
    outcome = Outcome(f"sys.exit / KeyboardInterrupt in the function ({mode})")
    with server(outcome, model=_instances(mode)) as running, running.http() as http, running.grpc() as channel:
        calls: list[Callable[[float], Answer]] = [lambda v: http_infer(http, v), lambda v: grpc_infer(channel, v)]
        for call in calls:
            outcome.answers += [call(EXIT), call(INTERRUPT)]
            with ThreadPoolExecutor(5) as pool:
                outcome.answers += pool.map(call, [ECHO] * 10)
        ready = http.get("/v2/models/fault/ready").status_code
        outcome.figures["ready"] = ready
        if ready != 200:
            outcome.notes.append(f"model ready answers {ready} afterwards")
    return outcome


def drain_while_hung(mode: str) -> Outcome:
    """SIGTERM while the function hangs on one request (HTTP and gRPC) and two more wait behind it. Needed: the
    server stops within the drain timeout plus a few seconds, every open request answered with a JSON 503."""
    outcome = Outcome(f"SIGTERM while the function hangs ({mode})")
    bound = DRAIN_S + STOP_GRACE_S + 10
    options = {"serve": {"drain_timeout_s": DRAIN_S}, "model": _instances(mode)}
    with (
        server(outcome, stop_bound_s=bound, **options) as running,
        running.http() as http,
        running.grpc() as channel,
        ThreadPoolExecutor(4) as pool,
    ):
        calls = [pool.submit(http_infer, http, HANG, timeout_s=bound)]
        time.sleep(0.3)
        calls.append(pool.submit(grpc_infer, channel, HANG, timeout_s=bound))
        calls += [pool.submit(http_infer, http, ECHO, timeout_s=bound) for _ in range(2)]
        time.sleep(0.5)
        seconds = running.stop(bound)
        outcome.answers += [call.result() for call in calls]
    outcome.figures["stop_s"] = -1 if seconds is None else seconds
    if seconds is None:
        outcome.notes.append(f"SIGTERM did not stop it within {bound:g} s: killed")
    else:
        outcome.notes.append(f"stopped in {seconds:.1f} s (drain_timeout_s={DRAIN_S:g})")
    _note_plain_text(outcome)
    return outcome


def execution_timeout(mode: str) -> Outcome:
    """The function hangs (thread mode: runs 3 s) past ``execution_timeout_s=1``, with requests queued behind
    it; then once more over gRPC. Needed: the slow batch fails with 504 / DEADLINE_EXCEEDED naming the timeout;
    a worker process is replaced and another instance serves the queue; a worker thread makes the model not
    ready until it returns; nothing waits forever."""
    outcome = Outcome(f"the function hangs past execution_timeout_s ({mode})")
    stuck = SLOW if mode == "thread" else HANG
    model = {"execution_timeout_s": TIMEOUT_S, **_instances(mode, 2)}
    with server(outcome, model=model) as running, running.http() as http, running.grpc() as channel:
        with ThreadPoolExecutor(5) as pool:
            hung = pool.submit(http_infer, http, stuck)
            time.sleep(0.3)
            queued = [pool.submit(http_infer, http, ECHO) for _ in range(4)]
            outcome.answers += [hung.result(), *(call.result() for call in queued)]
        outcome.figures["queued_s"] = max(call.result().seconds for call in queued)
        outcome.figures["ready_after"] = http.get("/v2/models/fault/ready").status_code
        if mode == "thread":  # the function returns after SLOW_S: ready again
            time.sleep(SLOW_S - TIMEOUT_S + 0.5)
        else:
            time.sleep(0.5)  # its replacement starts
        outcome.figures["ready_later"] = http.get("/v2/models/fault/ready").status_code
        outcome.answers.append(grpc_infer(channel, stuck))
        time.sleep(SLOW_S if mode == "thread" else 0.5)
        outcome.answers.append(http_infer(http, ECHO))
        running.look()
    return outcome


def owner_killed(mode: str) -> Outcome:
    """The owner is SIGKILLed while the function hangs. Needed: every process of the server ends within a
    couple of seconds (a worker busy in user code too), nothing is left in /dev/shm or the temp dir, and the
    requests in flight get an answer or a closed connection at once."""
    outcome = Outcome(f"owner SIGKILLed while the function hangs ({mode})")
    with (
        server(outcome, model=_instances(mode)) as running,
        running.http() as http,
        running.grpc() as channel,
        ThreadPoolExecutor(3) as pool,
    ):
        calls = [pool.submit(http_infer, http, HANG)]
        time.sleep(0.3)
        calls.append(pool.submit(http_infer, http, ECHO))  # queued behind the hung call
        calls.append(pool.submit(grpc_infer, channel, ECHO))
        time.sleep(0.3)
        running.kill()
        outcome.answers += [call.result() for call in calls]
    return outcome


def crash_loop(mode: str = "process") -> Outcome:
    """The function kills its worker process at every call, and a client keeps calling for 4 s. Needed: every
    call answered; restarts back off instead of looping; the model says why it is not ready."""
    outcome = Outcome("the function crashes its process at every call (process)")
    with server(outcome, model=_instances(mode)) as running, running.http() as http:
        deadline = time.monotonic() + 4.0
        while time.monotonic() < deadline:
            outcome.answers.append(http_infer(http, CRASH))
            time.sleep(0.02)
        index = http.post("/v2/repository/index").json()
        died = {match[1] for a in outcome.answers if (match := re.search(r"process \(pid (\d+)\) died", a.message))}
        outcome.figures["restarts"] = len(died)
        outcome.notes.append(f"{len(died)} worker processes started and died in 4 s")
        reason = next((row.get("reason", "") for row in index if row["name"] == "fault"), "")
        outcome.figures["reason_given"] = float("keeps dying" in reason or "died" in reason)
    return outcome


def huge_error(mode: str = "thread") -> Outcome:
    """The function raises an exception whose message is 20 MiB. Needed: the client gets the model's error,
    cut to a few KiB and saying so, over both protocols (not a 20 MiB body, not RESOURCE_EXHAUSTED)."""
    outcome = Outcome("a 20 MiB exception message")
    with server(outcome, model=_instances(mode)) as running, running.http() as http, running.grpc() as channel:
        outcome.answers += [http_infer(http, HUGE_ERROR), grpc_infer(channel, HUGE_ERROR), http_infer(http, ECHO)]
    http, grpc_ = outcome.answers[:2]
    outcome.notes.append(f"HTTP {http.status}, {http.size:,} B; gRPC {grpc_.status}, {grpc_.size:,} B of details")
    return outcome


# -- hostile clients ------------------------------------------------------------------------------------------


@contextmanager
def _bystander(running: Server) -> Iterator[list[float]]:
    """Another client, calling the model every 10 ms meanwhile: yields the list its latencies go to."""
    latencies: list[float] = []
    done = threading.Event()

    def call() -> None:
        with running.http() as http:
            while not done.is_set():
                answer = http_infer(http, ECHO, "identity")
                latencies.append(answer.seconds if answer.ok else float("inf"))
                time.sleep(0.01)

    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(0.3)
    try:
        yield latencies
    finally:
        done.set()
        thread.join()


def _memory_figures(outcome: Outcome, running: Server, before_mib: float, latencies: list[float]) -> None:
    grown = memory_mib(running.front, "VmHWM") - before_mib
    outcome.figures["front_peak_growth_mib"] = grown
    outcome.figures["bystander_max_s"] = max(latencies, default=float("inf"))
    outcome.notes.append(
        f"front peak +{grown:.0f} MiB; other client: {len(latencies)} calls, slowest "
        f"{outcome.figures['bystander_max_s'] * 1000:.0f} ms"
    )


def gzip_bomb(mode: str = "thread") -> Outcome:
    """A 1 MiB gzip body that inflates to 1 GiB (past the 512 MiB body limit). Needed: 413, little memory, and
    the other clients stay fast meanwhile."""
    outcome = Outcome("gzip bomb: 1 MiB inflating to 1 GiB")
    deflate = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    bomb = b"".join(deflate.compress(zeros) for _ in range(1024)) + deflate.flush()
    with server(outcome, model=_instances(mode)) as running, running.http() as http:
        before = memory_mib(running.front, "VmHWM")
        with _bystander(running) as latencies:
            path, headers = "/v2/models/identity/infer", {"content-encoding": "gzip"}
            outcome.answers.append(http_call(http, path, 30, content=bomb, headers=headers))
            outcome.answers.append(http_call(http, path, content=gzip.compress(b"[" * 100_000), headers=headers))
        _memory_figures(outcome, running, before, latencies)
    return outcome


def _raw_request(port: int, head: bytes, filler: Iterator[bytes], wait_s: float) -> tuple[Answer, int]:
    """Send ``head`` then ``filler``'s chunks on a raw connection until the server answers or closes it, or stops
    reading for 2 s; the answer (status None: none within ``wait_s``; "closed": the connection closed without
    one) and how many filler bytes went out."""
    started, sent, reply = time.monotonic(), 0, b""
    with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
        sock.sendall(head)
        for chunk in filler:
            if select.select([sock], [], [], 0)[0] or time.monotonic() - started > wait_s:
                break  # an answer (or the end of the connection) came
            try:
                sock.sendall(chunk)
            except OSError:  # TimeoutError included: the server stopped reading
                break
            sent += len(chunk)
        sock.settimeout(max(wait_s - (time.monotonic() - started), 0.1))
        try:
            while b"\r\n\r\n" not in reply and (data := sock.recv(65536)):
                reply += data
        except OSError:  # TimeoutError included
            pass
    seconds = time.monotonic() - started
    status_line = reply.split(b"\r\n", 1)[0].split()
    status: int | str | None = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else None
    message = reply.split(b"\r\n\r\n", 1)[-1].decode(errors="replace")[:200]
    if status is None and seconds < wait_s:
        status, message = "closed", "the server closed the connection without an answer"
    return Answer("http", status, message, seconds=seconds), sent


def _drip(interval_s: float) -> Iterator[bytes]:
    """One byte of a header value at a time, every ``interval_s``."""
    while True:
        time.sleep(interval_s)
        yield b"a"


def huge_header(mode: str = "thread") -> Outcome:
    """A request whose header grows to 128 MiB, then one with 1,000 headers. Needed: 431 (or a closed
    connection) long before 128 MiB are taken in, little memory, other clients served meanwhile."""
    outcome = Outcome("128 MiB header; 1,000 headers; 1 MiB of gRPC metadata")
    with server(outcome, model=_instances(mode)) as running, running.http() as http:
        before = memory_mib(running.front, "VmHWM")
        port = int(running.info["http"].rsplit(":", 1)[1])
        with _bystander(running) as latencies:
            head = b"POST /v2/models/identity/infer HTTP/1.1\r\nHost: x\r\nX-Big: "
            answer, sent = _raw_request(port, head, (b"a" * (1 << 20) for _ in range(128)), 60)
            outcome.answers.append(answer)
            outcome.figures["header_mib_taken"] = sent / (1 << 20)
            many = {f"x-header-{i}": "v" for i in range(1000)}
            outcome.answers.append(http_call(http, "/v2/models/identity/infer", json=_identity_body(), headers=many))
            with running.grpc() as channel:  # gRPC metadata past max_header_bytes
                metadata = [("x-big", "a" * (1 << 20))]
                outcome.answers.append(grpc_infer(channel, ECHO, "identity", metadata=metadata))
        _memory_figures(outcome, running, before, latencies)
        outcome.notes.append(f"{sent / (1 << 20):.0f} MiB of the header sent before the answer")
    return outcome


def slow_client(mode: str = "thread") -> Outcome:
    """A client that sends its headers a byte every 0.1 s (read_timeout_s=2). Needed: 408 and a closed
    connection after about 2 s, other clients served meanwhile."""
    outcome = Outcome("slow client: headers at 10 bytes/s")
    with server(outcome, serve={"read_timeout_s": 2.0}, model=_instances(mode)) as running:
        port = int(running.info["http"].rsplit(":", 1)[1])
        with _bystander(running) as latencies:
            head = b"POST /v2/models/identity/infer HTTP/1.1\r\nX-Slow: "
            answer, _ = _raw_request(port, head, _drip(0.1), 8)
            outcome.answers.append(answer)
        outcome.figures["bystander_max_s"] = max(latencies, default=float("inf"))
        outcome.notes.append(f"answered after {answer.seconds:.1f} s")
    return outcome


def deep_json(mode: str = "thread") -> Outcome:
    """A JSON body nested 100,000 deep. Needed: 400, not 500."""
    outcome = Outcome("JSON nested 100,000 deep")
    with server(outcome, model=_instances(mode)) as running, running.http() as http:
        outcome.answers.append(http_call(http, "/v2/models/fault/infer", content=b"[" * 100_000))
        outcome.answers.append(http_call(http, "/v2/repository/index", content=b"[" * 100_000))
    outcome.notes.append(f"statuses {outcome.statuses()}")
    return outcome


def grpc_burst(mode: str = "thread") -> Outcome:
    """Two bursts of 2,000 concurrent gRPC calls on one channel, to a fast model with no queue limit. Needed:
    every call answered OK (none CANCELLED by grpc's own backlog limits)."""
    outcome = Outcome("2 bursts of 2,000 concurrent gRPC calls")

    async def burst(target: str) -> list[Answer]:
        async with grpc.aio.insecure_channel(target) as channel:
            call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
            data = grpc_request(ECHO, "identity")

            async def one() -> Answer:
                try:
                    await call(data, timeout=30)
                except grpc.aio.AioRpcError as exc:
                    return Answer("grpc", exc.code().name, exc.details() or "")
                return Answer("grpc", "OK")

            return list(await asyncio.gather(*(one() for _ in range(2000))))

    with server(outcome, model=_instances(mode)) as running:
        for _ in range(2):
            outcome.answers += asyncio.run(burst(running.info["grpc"]))
    cancelled = sum(a.status == "CANCELLED" for a in outcome.answers)
    outcome.notes.append(f"{cancelled} CANCELLED by grpc, never seen by the model")
    for answer in outcome.answers:  # grpc's own refusal reached nothing of ours: the request was lost
        if answer.status == "CANCELLED":
            answer.status = None
    return outcome


def burst_memory(mode: str) -> Outcome:
    """40 requests of 16 MiB in and out at concurrency 4, then 8 s idle (idle_release_s=2). Needed: the
    server's memory comes back near where it was before the burst."""
    outcome = Outcome(f"memory after a 16 MiB burst ({mode})")
    with server(outcome, serve={"idle_release_s": 2.0}, model=_instances(mode)) as running, running.http() as http:
        pids = running.look() | {running.pid}
        http_infer(http, ECHO, "identity")
        before = sum(memory_mib(pid) for pid in pids)
        raw = np.ones(4 << 20, np.float32).tobytes()
        header = (
            b'{"inputs":[{"name":"x","datatype":"FP32","shape":[1,%d],"parameters":{"binary_data_size":%d}}],'
            b'"outputs":[{"name":"y","parameters":{"binary_data":true}}]}' % (4 << 20, len(raw))
        )
        headers = {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}

        def call(_: int) -> Answer:
            return http_call(http, "/v2/models/identity/infer", 30, content=header + raw, headers=headers)

        peak = before
        with ThreadPoolExecutor(4) as pool:
            calls = [pool.submit(call, n) for n in range(40)]
            while not all(c.done() for c in calls):
                peak = max(peak, sum(memory_mib(pid) for pid in running.look() | {running.pid}))
                time.sleep(0.05)
            outcome.answers += [c.result() for c in calls]
        time.sleep(8)
        after = sum(memory_mib(pid) for pid in running.look() | {running.pid})
    outcome.figures.update(before_mib=before, peak_mib=peak, after_mib=after)
    outcome.notes.append(f"server RSS {before:.0f} MiB before, {peak:.0f} peak, {after:.0f} after 8 s idle")
    return outcome


def _identity_body() -> dict[str, Any]:
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}


def _note_plain_text(outcome: Outcome) -> None:
    plain = sum(a.protocol == "http" and not a.ok and a.status is not None and not a.json for a in outcome.answers)
    if plain:
        outcome.notes.append(f"{plain} HTTP errors answered as plain text, not JSON")


# Every probe, and the modes it runs in, in the order of the report's table.
PROBES: list[tuple[Callable[[str], Outcome], tuple[str, ...]]] = [
    (user_exit, MODES),
    (drain_while_hung, MODES),
    (execution_timeout, MODES),
    (owner_killed, MODES),
    (crash_loop, ("process",)),
    (huge_error, ("thread",)),
    (gzip_bomb, ("thread",)),
    (huge_header, ("thread",)),
    (slow_client, ("thread",)),
    (deep_json, ("thread",)),
    (grpc_burst, ("thread",)),
    (burst_memory, MODES),
]
