"""Starting one system on loopback, timing its startup (scenario d), and stopping it with every process it
started and every shared-memory segment it left behind, also on Ctrl-C or an error.

Startup, for a system with a handshake: ``t0`` is taken in the server process just before ``run()``; "ready"
is when ``run()`` has returned *and* ``/v2/health/ready`` answers 200 to us, "first answer" when a first infer
request (add_sub) has been answered. Both clocks are CLOCK_MONOTONIC, shared by all processes of the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from .procfs import Tree, remove_shm, shm_names
from .scenarios import MeasureError
from .systems import Command, System, Tools

STARTUP_TIMEOUT_S = 120.0
EXIT_TIMEOUT_S = 30.0
LINGER_TIMEOUT_S = 20.0  # Triton's server outlives its parent for a while


@dataclass
class Running:
    system: System
    process: subprocess.Popen[bytes]
    tree: Tree
    http_port: int
    grpc_port: int | None
    startup: dict[str, float]
    log: Path

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def port(self, protocol: str) -> int:
        port = self.grpc_port if protocol == "grpc" else self.http_port
        if port is None:
            raise MeasureError(f"{self.system.name} has no {protocol} port")
        return port


@contextlib.contextmanager
def launched(system: System, tools: Tools, log: Path) -> Iterator[Running]:
    """``system`` started, ready and answering; stopped (and cleaned up after) on leaving."""
    command = system.command(tools)
    shm_before = shm_names()
    read_fd, write_fd = os.pipe() if system.handshake else (-1, -1)
    process = spawn(command, log, write_fd)
    tree = Tree(process.pid)
    try:
        if write_fd >= 0:
            os.close(write_fd)
        yield await_ready(system, command, process, tree, log, read_fd)
    finally:
        if read_fd >= 0:
            os.close(read_fd)
        stop(system, process, tree)
        left = {n for n in shm_names() - shm_before if owned(system, process.pid, n)}
        if remove_shm(left):
            with log.open("a") as out:
                out.write(f"\n[suite] removed {len(left)} /dev/shm entries it left behind: {sorted(left)}\n")


def spawn(command: Command, log: Path, handshake_fd: int) -> subprocess.Popen[bytes]:
    argv = command.argv + (["--handshake-fd", str(handshake_fd)] if handshake_fd >= 0 else [])
    env = {**os.environ, **command.env}
    with log.open("ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        # A session of its own: Ctrl-C in the terminal reaches the suite, which then stops the servers itself.
        return subprocess.Popen(
            argv,
            cwd=command.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            pass_fds=(handshake_fd,) if handshake_fd >= 0 else (),
            start_new_session=True,
        )


def await_ready(
    system: System, command: Command, process: subprocess.Popen[bytes], tree: Tree, log: Path, read_fd: int
) -> Running:
    spawned = time.monotonic()
    deadline = spawned + STARTUP_TIMEOUT_S
    report = read_handshake(read_fd, deadline, log) if read_fd >= 0 else {}
    http_port = int(command.http_port or report.get("http_port") or 0)
    grpc_port = command.grpc_port or report.get("grpc_port")
    running = Running(system, process, tree, http_port, grpc_port, {}, log)
    with httpx.Client(base_url=running.http_url, timeout=30) as http:
        ready = poll_ready(http, system.ready_path, process, deadline, log)
        path, body = system.request("add_sub")
        answer = http.post(path, json=body)
        answered = time.monotonic()
    if answer.status_code != 200:
        raise MeasureError(f"{system.name}'s first request answered {answer.status_code}: {answer.text[:300]}")
    t0 = float(report.get("t0", spawned))
    running.startup = {"spawn_ready_s": ready - spawned, "ready_s": ready - t0, "first_s": answered - t0}
    if "t_run" in report:
        running.startup["run_s"] = float(report["t_run"]) - t0
    tree.refresh()
    return running


def read_handshake(read_fd: int, deadline: float, log: Path) -> dict[str, Any]:
    """The server's one JSON line, read as soon as it is written; `MeasureError` if it exits or times out."""
    data = b""
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([read_fd], [], [], remaining)[0]:
            raise MeasureError.with_output(f"no handshake within {STARTUP_TIMEOUT_S:.0f} s", log_text(log))
        chunk = os.read(read_fd, 4096)
        if not chunk:
            raise MeasureError.with_output("the server exited before it was ready", log_text(log))
        data += chunk
    report: dict[str, Any] = json.loads(data)
    return report


def poll_ready(http: httpx.Client, path: str, process: subprocess.Popen[bytes], deadline: float, log: Path) -> float:
    """When ``path`` first answered 200 (no server says when it will be ready, so it is asked every 5 ms)."""
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if http.get(path, timeout=1).status_code == 200:
                return time.monotonic()
        if process.poll() is not None:
            raise MeasureError.with_output(
                f"the server exited ({process.returncode}) before it was ready", log_text(log)
            )
        time.sleep(0.005)
    raise MeasureError.with_output(f"not ready within {STARTUP_TIMEOUT_S:.0f} s", log_text(log))


def stop(system: System, process: subprocess.Popen[bytes], tree: Tree) -> None:
    """Signal the server, wait for it and every process it started; kill whatever is left after that."""
    try:
        tree.refresh()
        if process.poll() is None:
            process.send_signal(getattr(signal, system.stop_signal))
        try:
            process.wait(EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        deadline = time.monotonic() + LINGER_TIMEOUT_S
        while tree.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:  # a second Ctrl-C while waiting: kill at once
        tree.kill()
        if process.poll() is None:
            process.kill()
            process.wait()


def owned(system: System, pid: int, name: str) -> bool:
    return any(name.startswith(prefix.format(pid=pid)) for prefix in system.shm_prefixes)


def log_text(log: Path) -> str:
    return log.read_text(errors="replace") if log.exists() else "(no log)"
