"""Starts, watches and stops the workers of bound models, in the owner's process.

A model's workers follow its config: ``instances=None`` runs the function in one thread of the process that
called ``bind`` (a list of functions: one thread each); ``instances=N`` in N worker processes; ``devices`` in
worker processes placed on those devices (`placement.plan`). How each starts (thread, fork, spawn) is
`worker_process`'s business. A worker process that dies is reported to the front (its batch in flight fails) and
started again on the same device: at once the first time, then after a delay that doubles while it keeps dying
soon after its start (`Backoff`), so a function that crashes its process at every start does not restart in a
tight loop.

Worker processes stop when asked (`STOP_SIGNAL`, then SIGKILL after `STOP_GRACE_S`), and die with the owner however it
dies: each is started by the supervisor's own thread, which lives as long as the owner's `Serve`, and asks the
kernel for SIGKILL when its parent goes, so a worker stuck in user code does not outlive a killed owner. A worker
thread stuck in user code cannot be stopped: it is left behind (a daemon thread, with its own ZeroMQ context, so
that nothing else waits for it).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import multiprocessing.connection
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import zmq

from .context import WorkerContext
from .placement import Placement, plan, visible_gpus
from .spec import ModelSpec
from .transport.shm import remove_segments_of
from .worker import ModelFunction
from .worker_process import STOP_SIGNAL, Job, Site, fork, run_thread, spawn

__all__ = ["STOP_GRACE_S", "Backoff", "Supervisor", "WorkerGroup"]

log = logging.getLogger("pybind_serve")

T = TypeVar("T")
Notify = Callable[[str, str], None]  # (worker identity, why) -> tell the front

STOP_GRACE_S = 3.0  # how long stopping workers may take in all before the rest are killed or left behind


class _Handle(Protocol):
    """A worker process: a `multiprocessing.Process` (forked) or a `worker_process.ProcessHandle` (spawned)."""

    @property
    def pid(self) -> int | None: ...
    @property
    def sentinel(self) -> int: ...
    @property
    def exitcode(self) -> int | None: ...
    def join(self, timeout: float | None = None) -> None: ...
    def is_alive(self) -> bool: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...


@dataclass(frozen=True)
class _Plan:
    """One instance of a model: what it serves, where, and how it starts."""

    fn: ModelFunction
    placement: Placement | None  # None: a thread of the binding process
    spawn: bool = False


def _placements(spec: ModelSpec, gpus: Sequence[str]) -> list[Placement]:
    config = spec.config
    if config.devices is None:
        return [Placement(i, "cpu", "cpu", "") for i in range(config.instances or 0)]
    assert isinstance(config.devices, tuple), "bind() resolves the devices"
    return plan(config.devices, config.instances or 1, gpus)


def _plans(spec: ModelSpec, fn: ModelFunction | Sequence[ModelFunction]) -> list[_Plan]:
    """The model's instances; ``fn`` a list: one function each (`Serve.bind` checked that they match)."""
    functions = list(fn) if isinstance(fn, (list, tuple)) else None
    if spec.config.devices is None and spec.config.instances is None:
        return [_Plan(f, None) for f in functions or [fn]]
    placements = _placements(spec, visible_gpus())
    cuda_in_use = _cuda_initialized()
    return [
        _Plan(functions[p.instance] if functions else fn, p, spawn=p.gpu or cuda_in_use)  # type: ignore[arg-type]
        for p in placements
    ]


def _cuda_initialized() -> bool:
    """Whether this process has initialised CUDA through torch (a child forked from it could not use CUDA)."""
    torch = sys.modules.get("torch")
    try:
        return bool(torch is not None and torch.cuda.is_initialized())
    except Exception:  # a torch without CUDA, or a module that only looks like it
        return False


@dataclass(eq=False)
class _Thread:
    identity: str
    thread: threading.Thread
    stop_write_fd: int

    def signal_stop(self) -> None:
        """Close the stop pipe: the worker sees its end readable at its next receive, and stops."""
        if self.stop_write_fd >= 0:
            os.close(self.stop_write_fd)
            self.stop_write_fd = -1


@dataclass(eq=False)
class _Process:
    identity: str
    tag: str
    plan: _Plan
    process: _Handle
    started: float = field(default_factory=time.monotonic)


class Backoff:
    """When to start a worker process again after it died: at once, unless the previous ones kept dying within
    ``healthy_s`` of their start; then after ``first_s``, doubling up to ``max_s``.

    >>> b = Backoff(first_s=0.5, max_s=4.0, healthy_s=10.0)
    >>> [b.died(lived_s=1.0) for _ in range(6)]
    [0.0, 0.5, 1.0, 2.0, 4.0, 4.0]
    >>> b.died(lived_s=60.0)
    0.0
    """

    def __init__(self, first_s: float = 0.5, max_s: float = 30.0, healthy_s: float = 10.0) -> None:
        self.first_s, self.max_s, self.healthy_s = first_s, max_s, healthy_s
        self.failures = 0  # deaths in a row, each within healthy_s of its start

    def died(self, lived_s: float) -> float:
        """A worker died after ``lived_s`` seconds: the delay before its replacement starts."""
        self.failures = self.failures + 1 if lived_s < self.healthy_s else 1
        return 0.0 if self.failures == 1 else min(self.first_s * 2 ** (self.failures - 2), self.max_s)


@dataclass(eq=False)
class WorkerGroup:
    """The workers of one bound model version."""

    spec: ModelSpec
    threads: list[_Thread] = field(default_factory=list)
    processes: list[_Process] = field(default_factory=list)
    backoff: Backoff = field(default_factory=Backoff)
    restarts_due: list[tuple[float, _Plan]] = field(default_factory=list)  # (monotonic time, what) to start


class Supervisor:
    """Every worker of one `Serve`; its thread forks every worker process and restarts those that die."""

    def __init__(self, site: Site, context: zmq.Context[Any], notify: Notify, prefix: str = "worker") -> None:
        self._site, self._context, self._notify = site, context, notify
        self._prefix = prefix  # of its workers' identities: unique among the workers of every front it serves
        self._groups: dict[tuple[str, int], WorkerGroup] = {}
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        self._stopping = False
        self._tasks: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        self._wake_read, self._wake_write = os.pipe()
        self._monitor = threading.Thread(target=self._watch, name="pybind_serve-monitor", daemon=True)
        self._monitor.start()

    @classmethod
    def create(
        cls,
        endpoints: Sequence[str],
        owner: str,
        lifeline: tuple[int, int],
        context: zmq.Context[Any],
        notify: Notify,
        idle_release_s: float = 10.0,
        prefix: str = "worker",
    ) -> Supervisor:
        site = Site(tuple(endpoints), owner, lifeline[0], lifeline[1], idle_release_s)
        return cls(site, context, notify, prefix)

    def start(self, spec: ModelSpec, fn: ModelFunction | Sequence[ModelFunction]) -> WorkerGroup:
        """Start the workers of a model version. Raises `TypeError` for a function that cannot be sent to a
        spawned worker."""
        plans = _plans(spec, fn)
        group = WorkerGroup(spec)

        def start_processes() -> None:
            group.processes.extend(self._start_process(spec, p) for p in plans if p.placement is not None)

        try:
            group.threads.extend(self._start_thread(spec, p, i) for i, p in enumerate(plans) if p.placement is None)
            self._on_monitor(start_processes)
        except BaseException:
            _stop([group], self._site.owner, STOP_GRACE_S)
            raise
        with self._lock:
            self._groups[(spec.name, spec.version)] = group
        self._wake()
        return group

    def group(self, name: str, version: int) -> WorkerGroup | None:
        return self._groups.get((name, version))

    def place(self, spec: ModelSpec) -> ModelSpec:
        """``spec`` as it is: `Serve.bind` resolved its ``devices`` against this host's GPUs already."""
        return spec

    def _identity(self, spec: ModelSpec) -> tuple[str, str]:
        n = next(self._ids)
        return f"{self._prefix}-{n}:{spec.name}:{spec.version}", f"w{n}"

    def _job(self, spec: ModelSpec, plan: _Plan, index: int) -> Job:
        identity, tag = self._identity(spec)
        placement = plan.placement or Placement(index, "cpu", "cpu", "")
        context = WorkerContext(
            spec.name,
            spec.version,
            placement.instance,
            placement.device,
            placement.host_device,
            tuple(t.name for t in spec.outputs),
        )
        visible = placement.visible_devices if plan.spawn and placement.gpu else None  # CPU: the environment as is
        return Job(self._site, spec, plan.fn, context, identity, tag, visible)

    def _start_thread(self, spec: ModelSpec, plan: _Plan, index: int) -> _Thread:
        job = self._job(spec, plan, index)
        read_fd, write_fd = os.pipe()
        thread = threading.Thread(target=run_thread, args=(job, read_fd), name=f"pybind_serve-{job.identity}")
        thread.daemon = True
        thread.start()
        return _Thread(job.identity, thread, write_fd)

    def _start_process(self, spec: ModelSpec, plan: _Plan) -> _Process:
        """Start a worker process; only ever on the monitor thread, which outlives every worker (the kernel
        kills a worker when the thread that started it ends)."""
        assert plan.placement is not None
        job = self._job(spec, plan, plan.placement.instance)
        return _Process(job.identity, job.tag, plan, spawn(job) if plan.spawn else fork(job))

    def _on_monitor(self, task: Callable[[], T]) -> T:
        """Run ``task`` on the monitor thread and return its result."""
        if threading.current_thread() is self._monitor:
            return task()
        future: Future[T] = Future()
        self._tasks.put((task, future))
        self._wake()
        return future.result()

    def identities(self) -> list[str]:
        """The identities of every worker thread and live worker process."""
        with self._lock:
            groups = list(self._groups.values())
        threads = [t.identity for g in groups for t in g.threads]
        return threads + [p.identity for g in groups for p in g.processes if p.process.is_alive()]

    def stop_group(self, name: str, version: int, timeout_s: float = STOP_GRACE_S) -> None:
        with self._lock:
            group = self._groups.pop((name, version), None)
        if group is not None:
            _stop([group], self._site.owner, timeout_s)
            self._wake()

    def close(self, timeout_s: float = STOP_GRACE_S) -> None:
        """Stop every worker and the monitor, within about ``timeout_s``; idempotent."""
        with self._lock:
            self._stopping = True
            groups = list(self._groups.values())
            self._groups.clear()
        _stop(groups, self._site.owner, timeout_s)
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
                    break
                sentinels = {p.process.sentinel: (g, p) for g in self._groups.values() for p in g.processes}
                due = [t for g in self._groups.values() for t, _ in g.restarts_due]
            timeout = max(min(due) - time.monotonic(), 0.0) if due else None
            ready = multiprocessing.connection.wait([self._wake_read, *sentinels], timeout)
            if self._wake_read in ready:
                os.read(self._wake_read, 4096)
            self._run_tasks()
            for sentinel in ready:
                if sentinel in sentinels:
                    self._reap(*sentinels[sentinel])
            self._start_due()
        self._run_tasks()  # never leave a caller of _on_monitor waiting

    def _run_tasks(self) -> None:
        while True:
            try:
                task, future = self._tasks.get_nowait()
            except queue.Empty:
                return
            try:
                future.set_result(task())
            except BaseException as exc:
                future.set_exception(exc)

    def _reap(self, group: WorkerGroup, dead: _Process) -> None:
        """A worker process ended: unless it was stopped on purpose, schedule its replacement and tell the front."""
        with self._lock:
            current = self._groups.get((group.spec.name, group.spec.version))
            if self._stopping or current is not group or dead not in group.processes:
                return  # stopped on purpose
            dead.process.join()
            group.processes.remove(dead)
            remove_segments_of(self._site.owner, dead.tag)
            delay = group.backoff.died(time.monotonic() - dead.started)
            group.restarts_due.append((time.monotonic() + delay, dead.plan))
        why = f"process (pid {dead.process.pid}) {_exit_description(dead.process.exitcode)}"
        if delay:
            why += f"; it keeps dying ({group.backoff.failures} times in a row), next start in {delay:g} s"
        log.error("%s: worker %s; starting a new one", group.spec.label, why)
        self._notify(dead.identity, why)

    def _start_due(self) -> None:
        now = time.monotonic()
        with self._lock:
            for group in self._groups.values():
                due = [entry for entry in group.restarts_due if entry[0] <= now]
                for entry in due:
                    group.restarts_due.remove(entry)
                    try:
                        group.processes.append(self._start_process(group.spec, entry[1]))
                    except Exception:
                        log.exception("%s: could not start a worker process", group.spec.label)


def _exit_description(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"died with exit code {code}"


def _stop(groups: list[WorkerGroup], owner: str, timeout_s: float) -> None:
    """Stop these groups' workers within about ``timeout_s`` in all: threads are asked and awaited (one stuck
    in user code is left behind), processes get `STOP_SIGNAL` (they ignore SIGTERM), then SIGKILL."""
    deadline = time.monotonic() + timeout_s
    threads = [t for g in groups for t in g.threads]
    processes = [p for g in groups for p in g.processes]
    for worker in threads:
        worker.signal_stop()
    for proc in processes:
        if proc.process.is_alive() and proc.process.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.process.pid, STOP_SIGNAL)
    for worker in threads:
        worker.thread.join(max(deadline - time.monotonic(), 0.0))
        if worker.thread.is_alive():
            log.warning("worker %s is still in the model's function; leaving it behind", worker.identity)
    for proc in processes:
        proc.process.join(max(deadline - time.monotonic(), 0.0))
        if proc.process.is_alive():
            proc.process.kill()
            proc.process.join()
        remove_segments_of(owner, proc.tag)
