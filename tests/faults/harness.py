"""What the fault probes share: a server in a process of its own (`Server`), clients whose every call is bounded in
time and counted (`Outcome`), and the leak check after the server stops.

The server process imports pybind_serve from ``PYBIND_SERVE_UNDER_TEST`` when that is set (a checkout of another
version: how the report compares before and after), else the one the tests import.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
from tritonclient.grpc import service_pb2 as pb

from tests.conftest import alive, descendants_of

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("server.py")
CALL_S = 8.0  # the longest any probe waits for one answer: no answer by then is a lost request
STOP_GRACE_S = 3.0  # pybind_serve.supervisor.STOP_GRACE_S: how long stopping the workers may take


# -- results -------------------------------------------------------------------------------------------------


@dataclass
class Answer:
    protocol: str  # "http" or "grpc"
    status: int | str | None  # HTTP status, gRPC code name, None: no answer (lost)
    message: str = ""
    json: bool = True  # an HTTP error answered as {"error": ...}
    size: int = 0  # bytes of the answer's body (HTTP) or details (gRPC)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status in (200, "OK")


@dataclass
class Outcome:
    """What one probe sent and got back, and what its server left behind."""

    probe: str
    answers: list[Answer] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)

    @property
    def sent(self) -> int:
        return len(self.answers)

    @property
    def ok(self) -> int:
        return sum(a.ok for a in self.answers)

    @property
    def errors(self) -> int:
        return sum(not a.ok and a.status is not None for a in self.answers)

    @property
    def lost(self) -> int:
        return sum(a.status is None for a in self.answers)

    def statuses(self) -> list[int | str | None]:
        return [a.status for a in self.answers]

    def row(self) -> str:
        leaks = ", ".join(self.leaks) or "none"
        notes = "; ".join(self.notes)
        return f"| {self.probe} | {self.sent} | {self.ok} | {self.errors} | {self.lost} | {leaks} | {notes} |"


# -- clients ---------------------------------------------------------------------------------------------------


def infer_body(value: float, size: int = 1) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, size], "data": [value] * size}]}


def http_call(client: httpx.Client, path: str, timeout_s: float = CALL_S, **request: Any) -> Answer:
    started = time.monotonic()
    try:
        response = client.post(path, timeout=timeout_s, **request)
    except httpx.HTTPError as exc:  # no answer in time, or the connection broke first
        return Answer("http", None, f"{type(exc).__name__}: {exc}", seconds=time.monotonic() - started)
    seconds = time.monotonic() - started
    if response.status_code == 200:
        return Answer("http", 200, size=len(response.content), seconds=seconds)
    try:
        message, is_json = str(response.json()["error"]), True
    except (ValueError, KeyError, TypeError):
        message, is_json = response.text[:200], False
    return Answer("http", response.status_code, message[:300], is_json, len(response.content), seconds)


def http_infer(client: httpx.Client, value: float, model: str = "fault", timeout_s: float = CALL_S) -> Answer:
    return http_call(client, f"/v2/models/{model}/infer", timeout_s, json=infer_body(value))


def grpc_request(value: float, model: str = "fault") -> bytes:
    request = pb.ModelInferRequest(model_name=model)
    tensor = request.inputs.add()
    tensor.name, tensor.datatype = "x", "FP32"
    tensor.shape.extend([1, 1])
    request.raw_input_contents.append(np.array([value], np.float32).tobytes())
    return bytes(request.SerializeToString())


def grpc_infer(
    channel: grpc.Channel,
    value: float,
    model: str = "fault",
    timeout_s: float = CALL_S,
    metadata: list[tuple[str, str]] | None = None,
) -> Answer:
    call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    started = time.monotonic()
    try:
        call(grpc_request(value, model), timeout=timeout_s, metadata=metadata)
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details() or ""
        seconds = time.monotonic() - started
        if code is grpc.StatusCode.DEADLINE_EXCEEDED and seconds >= timeout_s * 0.99 and details == "Deadline Exceeded":
            return Answer("grpc", None, "no answer in time (the client's deadline)", seconds=seconds)
        return Answer("grpc", code.name, details[:300], size=len(details), seconds=seconds)
    return Answer("grpc", "OK", seconds=time.monotonic() - started)


# -- the server under test -----------------------------------------------------------------------------------


def memory_mib(pid: int, key: str = "VmRSS") -> float:
    """A ``/proc/<pid>/status`` figure in MiB (VmRSS: resident now, VmHWM: its peak); 0 if the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Server:
    """``tests/faults/server.py`` with ``options`` in a process of its own; see `start`."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        self.process: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}
        self.seen: set[int] = set()  # every process of the server seen so far
        self.stop_seconds: float | None = None
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by `close`

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def front(self) -> int:
        """The front process: the one child of the owner that runs ``pybind_serve.front.process``."""
        for pid in descendants_of(self.pid):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"pybind_serve.front.process" in f.read():
                    return pid
        raise AssertionError("the server has no front process")

    def start(self) -> Server:
        under_test = os.environ.get("PYBIND_SERVE_UNDER_TEST")
        path = [under_test] if under_test else []
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([*path, str(REPO), os.environ.get("PYTHONPATH", "")])}
        command = [sys.executable, str(SCRIPT), json.dumps(self.options)]
        # Not from the checkout's root: the front runs `python -m`, which would import the package found there.
        cwd = tempfile.gettempdir()
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._stderr, env=env, cwd=cwd)
        assert self.process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            line = self.process.stdout.readline() if selector.select(60) else b""
        if not line:
            self.kill()
            raise RuntimeError(f"the fault server did not start; its stderr:\n{self.stderr()}")
        self.info = json.loads(line)
        self.look()
        return self

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-4000:]

    def look(self) -> set[int]:
        """Note the server's processes now (worker processes come and go)."""
        found = descendants_of(self.pid)
        self.seen |= found
        return found

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.info["http"], timeout=CALL_S)

    def grpc(self) -> grpc.Channel:
        return grpc.insecure_channel(self.info["grpc"])

    def stop(self, bound_s: float) -> float | None:
        """SIGTERM, as a service manager stops it; seconds until it exited, or None if it was still running after
        ``bound_s`` (then it is killed)."""
        assert self.process is not None
        self.look()
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(bound_s)
            self.stop_seconds = time.monotonic() - started
        except subprocess.TimeoutExpired:
            self.kill()
        return self.stop_seconds

    def kill(self) -> None:
        """SIGKILL the owner (its other processes are left to die on their own, or not)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.look()
            self.process.kill()
        self.process.wait()

    def leaks(self, settle_s: float = 2.0) -> list[str]:
        """What the stopped server left: processes still alive ``settle_s`` after the owner ended (each is
        killed), /dev/shm segments and socket files of its pid (each is removed)."""
        assert self.process is not None and self.process.poll() is not None
        deadline = time.monotonic() + settle_s
        while any(alive(pid) for pid in self.seen) and time.monotonic() < deadline:
            time.sleep(0.05)
        left = [f"process {pid} alive" for pid in sorted(self.seen) if alive(pid)]
        for pid in self.seen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        prefix = f"pybind_serve_{self.pid}_"
        for directory, kind in (("/dev/shm", "segment"), (tempfile.gettempdir(), "socket file")):
            for name in sorted(os.listdir(directory)):
                if name.startswith(prefix):
                    left.append(f"{kind} {name}")
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(directory, name))
        return left

    def close(self) -> None:
        if self.process is not None:
            self.kill()
            if self.process.stdout is not None:
                self.process.stdout.close()
        self._stderr.close()


@contextlib.contextmanager
def server(outcome: Outcome, stop_bound_s: float = 20.0, **options: Any) -> Iterator[Server]:
    """A started `Server`; on leaving, stopped with SIGTERM (unless the probe ended it) and checked for leaks."""
    running = Server(options).start()
    if running.info.get("skipped"):
        outcome.notes.append(f"options unknown to this version: {', '.join(running.info['skipped'])}")
    try:
        yield running
        still_running = running.process is not None and running.process.poll() is None
        if still_running and running.stop(stop_bound_s) is None:
            outcome.notes.append(f"SIGTERM did not stop the server within {stop_bound_s:g} s: killed")
        outcome.leaks += running.leaks()
    finally:
        running.close()
