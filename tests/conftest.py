"""Shared fixtures: every test fails if it leaks /dev/shm segments or child processes."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

# Ray's nodes and drivers on loopback only. Ray reads this once, when it is first imported, which may be while any
# test module is collected: so here, before all of them (else a cluster's driver takes the host's outward address
# and cannot reach the nodes started on loopback).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from pybind_serve import Serve

SHM = "/dev/shm"


def ours_in_shm() -> set[str]:
    """This process's segments: every segment name starts with the pid of the process that made the Serve."""
    prefix = f"pybind_serve_{os.getpid()}_"
    return {name for name in os.listdir(SHM) if name.startswith(prefix)}


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state, ppid, ...), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def alive(pid: int) -> bool:
    """Whether a process runs; a zombie (exited, not yet reaped by whoever adopted it) does not."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def live_parents() -> dict[int, int]:
    """Every live (non-zombie) process and its parent, read from /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := stat_fields(int(entry))) is not None and fields[0] != "Z":
            parents[int(entry)] = int(fields[1])
    return parents


def children_of(pid: int) -> set[int]:
    return {child for child, parent in live_parents().items() if parent == pid}


def descendants_of(pid: int) -> set[int]:
    parents, found, frontier = live_parents(), set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def child_pids() -> set[int]:
    """Live (non-zombie) children of this process."""
    return children_of(os.getpid())


def wait_until(condition, timeout_s: float = 10.0, interval_s: float = 0.02) -> bool:  # type: ignore[no-untyped-def]
    """Poll ``condition`` until true or timed out (for states that no event announces, e.g. process exit)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval_s)
    return bool(condition())


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    shm_before, children_before = ours_in_shm(), child_pids()
    yield
    # Processes a test stopped may take a moment to be reaped; anything still here after that is a leak.
    assert wait_until(lambda: not (child_pids() - children_before), 15), (
        f"leaked child processes: {child_pids() - children_before}"
    )
    leaked = ours_in_shm() - shm_before
    assert not leaked, f"leaked shared memory segments: {sorted(leaked)}"


@contextlib.contextmanager
def module_server(setup: Callable[[Serve], None], warm_up: Callable[[Serve], None], **options: Any) -> Iterator[Serve]:
    """A running `Serve` on free loopback ports for a whole test module, checked for leaks once stopped.

    Enter it in a module-scoped fixture, which pytest sets up before any function-scoped one (the autouse leak
    check above included) and tears down after the module's last test. ``setup`` binds the models;
    ``warm_up`` must call each of them once, because the front and each worker map their shared-memory arena on
    their first request: so the server's processes and segments exist before each test's snapshot and after
    it, and only what a test itself leaks is reported. ``options`` go to `Serve`.
    """
    shm_before, children_before = ours_in_shm(), child_pids()
    server = Serve(http_port=0, grpc_port=0, metrics_port=0, **options)
    try:
        setup(server)
        server.run()
        warm_up(server)
        yield server
    finally:
        server.stop()
    assert wait_until(lambda: not (child_pids() - children_before), 15), (
        f"the module's server leaked child processes: {child_pids() - children_before}"
    )
    leaked = ours_in_shm() - shm_before
    assert not leaked, f"the module's server leaked shared memory segments: {sorted(leaked)}"
