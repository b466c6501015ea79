"""The load generator for servers that do not speak KServe (LitServe), and for ours beside them: a bounded
closed loop on asyncio, ``concurrency`` keep-alive HTTP/1.1 connections each sending its next request as soon as
the last is answered.

It speaks just enough HTTP/1.1 itself (a fixed request; responses with Content-Length or chunked), because
httpx, tried first, was the limit: about 550 req/s on this 2-core machine at any concurrency, and minutes to
open 256 clients. It runs in a process of its own (``python -m benchmarks.harness.httpload``, one JSON line
out), as perf_analyzer does, so that the suite's own threads cannot slow it. Only requests that complete inside
the measured span (after a warm-up) count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .scenarios import MeasureError

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Tally:
    """Latencies (s) of the requests answered inside [start_s, stop_s), and failures anywhere."""

    start_s: float
    stop_s: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0


def request_bytes(host: str, path: str, body: bytes) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


async def response_status(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; its status, and whether the server keeps the connection open."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower().split("\r\n")
    status = int(head[0].split()[1])
    headers = dict(line.split(":", 1) for line in head[1:] if ":" in line)
    if headers.get("transfer-encoding", "").strip() == "chunked":
        while size := int((await reader.readline()).split(b";")[0], 16):
            await reader.readexactly(size + 2)
        await reader.readline()
    else:
        await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers.get("connection", "").strip() != "close"


async def client(host: str, port: int, request: bytes, tally: Tally) -> None:
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while (sent := time.monotonic()) < tally.stop_s:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            assert reader is not None
            writer.write(request)
            status, keep = await response_status(reader)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            status, keep = 0, False
        answered = time.monotonic()
        if status != 200:
            tally.errors += 1
        elif tally.start_s <= answered < tally.stop_s:  # as perf_analyzer counts: by when it was answered
            tally.latencies.append(answered - sent)
        if not keep and writer is not None:
            writer.close()
            writer = None
    if writer is not None:
        writer.close()


async def drive(url: str, path: str, body: bytes, concurrency: int, seconds: float, warmup_s: float) -> Tally:
    where = urlsplit(url)
    host, port = where.hostname or "127.0.0.1", where.port or 80
    request = request_bytes(where.netloc, path, body)
    now = time.monotonic()
    tally = Tally(now + warmup_s, now + warmup_s + seconds)
    await asyncio.gather(*(client(host, port, request, tally) for _ in range(concurrency)))
    return tally


def figures(tally: Tally) -> dict[str, float]:
    """req/s and p50/p99 latency (ms) of a tally, as perf_analyzer reports them."""
    if len(tally.latencies) < 2:
        raise MeasureError(f"{len(tally.latencies)} requests answered in the window ({tally.errors} failed)")
    cuts = statistics.quantiles(tally.latencies, n=100, method="inclusive")
    return {
        "req_s": len(tally.latencies) / (tally.stop_s - tally.start_s),
        "p50_ms": cuts[49] * 1000,
        "p99_ms": cuts[98] * 1000,
        "errors": tally.errors,
    }


def measure(url: str, path: str, payload: object, concurrency: int, seconds: float) -> dict[str, float]:
    """Run the loop in a process of its own against ``url + path``, posting ``payload`` as JSON."""
    argv = [sys.executable, "-m", "benchmarks.harness.httpload", url, path, json.dumps(payload)]
    argv += ["--concurrency", str(concurrency), "--seconds", str(seconds), "--warmup", str(seconds / 3)]
    timeout_s = 60 + 3 * seconds
    try:
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise MeasureError(f"the asyncio loop ran past {timeout_s:.0f} s") from None
    if done.returncode != 0:
        raise MeasureError.with_output(f"the asyncio loop exited {done.returncode}", done.stdout + done.stderr)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    if result["errors"]:
        raise MeasureError(f"{result['errors']:.0f} requests failed")
    return result


def event_loop_runner() -> Callable[[Coroutine[Any, Any, Tally]], Tally]:
    """uvloop's when installed (it is a dependency of pybind_serve), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("path")
    parser.add_argument("body", help="the JSON body of every request")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=3.0, help="the measured span")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before it, not counted")
    args = parser.parse_args()
    run = event_loop_runner()
    tally = run(drive(args.url, args.path, args.body.encode(), args.concurrency, args.seconds, args.warmup))
    print(json.dumps(figures(tally)))


if __name__ == "__main__":
    main()
