"""Starts, watches and stops the workers of bound models, in the owner's process.

A model bound with ``instances=None`` runs in a thread of the process that called ``bind``; with
``instances=N`` it runs in N worker processes forked from it (so each has its own copy of the function, and
nothing is pickled). A worker process that dies is reported to the front (its batch in flight fails) and
started again. Worker processes stop when asked (SIGTERM) and when the owner dies (their lifeline closes).
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq

from .protocol.messages import ModelSpec
from .transport.channel import WorkerChannel
from .transport.shm import Arena, remove_segments_of, segment_prefix
from .worker import ModelFunction, Worker

__all__ = ["Supervisor", "WorkerGroup"]

log = logging.getLogger("pybind_serve")

Notify = Callable[[str, str], None]  # (worker identity, why) -> tell the front


@dataclass(frozen=True)
class _Site:
    """Where workers connect and how their segments are named."""

    endpoint: str
    owner: str
    lifeline_fd: int
    lifeline_write_fd: int


def _run_worker(
    site: _Site, spec: ModelSpec, fn: ModelFunction, identity: str, tag: str, stop_fd: int, context: Any
) -> None:
    channel = WorkerChannel(context, site.endpoint, identity, stop_fd)
    Worker(spec, fn, channel, Arena(site.owner, tag)).serve(segment_prefix(site.owner, tag))


def _process_main(site: _Site, spec: ModelSpec, fn: ModelFunction, identity: str, tag: str) -> None:
    os.close(site.lifeline_write_fd)  # else our own copy would keep the lifeline open after the owner died
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the owner, which stops us in order
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    context: zmq.Context[Any] = zmq.Context()
    try:
        _run_worker(site, spec, fn, identity, tag, site.lifeline_fd, context)
    finally:
        context.term()


@dataclass(eq=False)
class _Thread:
    identity: str
    thread: threading.Thread
    stop_write_fd: int
    stop_read_fd: int

    def stop(self, timeout_s: float) -> None:
        os.write(self.stop_write_fd, b"x")
        self.thread.join(timeout_s)
        os.close(self.stop_write_fd)
        os.close(self.stop_read_fd)


@dataclass(eq=False)
class _Process:
    identity: str
    tag: str
    process: multiprocessing.process.BaseProcess


@dataclass(eq=False)
class WorkerGroup:
    """The workers of one bound model version."""

    spec: ModelSpec
    fn: ModelFunction
    threads: list[_Thread] = field(default_factory=list)
    processes: list[_Process] = field(default_factory=list)


class Supervisor:
    """Every worker of one `Serve`; a monitor thread restarts worker processes that die."""

    def __init__(self, site: _Site, context: zmq.Context[Any], notify: Notify) -> None:
        self._site, self._context, self._notify = site, context, notify
        self._groups: dict[tuple[str, int], WorkerGroup] = {}
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        self._stopping = False
        self._wake_read, self._wake_write = os.pipe()
        self._monitor = threading.Thread(target=self._watch, name="pybind_serve-monitor", daemon=True)
        self._monitor.start()

    @classmethod
    def create(
        cls, endpoint: str, owner: str, lifeline: tuple[int, int], context: zmq.Context[Any], notify: Notify
    ) -> Supervisor:
        return cls(_Site(endpoint, owner, lifeline[0], lifeline[1]), context, notify)

    def start(self, spec: ModelSpec, fn: ModelFunction) -> WorkerGroup:
        group = WorkerGroup(spec, fn)
        with self._lock:
            if spec.config.instances is None:
                group.threads.append(self._start_thread(spec, fn))
            else:
                group.processes.extend(self._start_process(spec, fn) for _ in range(spec.config.instances))
            self._groups[(spec.name, spec.version)] = group
        self._wake()
        return group

    def group(self, name: str, version: int) -> WorkerGroup | None:
        return self._groups.get((name, version))

    def _identity(self, spec: ModelSpec) -> tuple[str, str]:
        n = next(self._ids)
        return f"worker-{n}:{spec.name}:{spec.version}", f"w{n}"

    def _start_thread(self, spec: ModelSpec, fn: ModelFunction) -> _Thread:
        identity, tag = self._identity(spec)
        read_fd, write_fd = os.pipe()
        args = (self._site, spec, fn, identity, tag, read_fd, self._context)
        thread = threading.Thread(target=_run_worker, args=args, name=f"pybind_serve-{identity}", daemon=True)
        thread.start()
        return _Thread(identity, thread, write_fd, read_fd)

    def _start_process(self, spec: ModelSpec, fn: ModelFunction) -> _Process:
        identity, tag = self._identity(spec)
        context = multiprocessing.get_context("fork")
        process = context.Process(
            target=_process_main, args=(self._site, spec, fn, identity, tag), name=identity, daemon=True
        )
        with warnings.catch_warnings():
            # Python 3.12+ warns about fork in a threaded process; the child only starts fresh sockets of its own.
            warnings.simplefilter("ignore", DeprecationWarning)
            process.start()
        return _Process(identity, tag, process)

    def stop_group(self, name: str, version: int, timeout_s: float = 10.0) -> None:
        with self._lock:
            group = self._groups.pop((name, version), None)
        if group is not None:
            self._stop(group, timeout_s)
            self._wake()

    def _stop(self, group: WorkerGroup, timeout_s: float) -> None:
        for worker in group.threads:
            worker.stop(timeout_s)
        for proc in group.processes:
            proc.process.terminate()
        for proc in group.processes:
            proc.process.join(timeout_s)
            if proc.process.is_alive():
                proc.process.kill()
                proc.process.join()
            remove_segments_of(self._site.owner, proc.tag)

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop every worker and the monitor; idempotent."""
        with self._lock:
            self._stopping = True
            groups = list(self._groups.values())
            self._groups.clear()
        for group in groups:
            self._stop(group, timeout_s)
        self._wake()
        self._monitor.join(timeout_s)
        for fd in (self._wake_read, self._wake_write):
            os.close(fd)

    def _wake(self) -> None:
        os.write(self._wake_write, b"x")

    def _watch(self) -> None:
        while True:
            with self._lock:
                if self._stopping:
                    return
                sentinels = {p.process.sentinel: (g, p) for g in self._groups.values() for p in g.processes}
            ready = multiprocessing.connection.wait([self._wake_read, *sentinels])
            if self._wake_read in ready:
                os.read(self._wake_read, 4096)
            for sentinel in ready:
                if sentinel in sentinels:
                    self._restart(*sentinels[sentinel])

    def _restart(self, group: WorkerGroup, dead: _Process) -> None:
        with self._lock:
            current = self._groups.get((group.spec.name, group.spec.version))
            if self._stopping or current is not group or dead not in group.processes:
                return  # stopped on purpose
            dead.process.join()
            code = dead.process.exitcode
            why = f"process (pid {dead.process.pid}) died with exit code {code}"
            log.error("%s: worker %s; starting a new one", group.spec.label, why)
            remove_segments_of(self._site.owner, dead.tag)
            group.processes.remove(dead)
            group.processes.append(self._start_process(group.spec, group.fn))
        self._notify(dead.identity, why)
