"""How one worker starts: in a thread of the owner, in a process forked from it, or in a fresh process (spawned).

Every worker first enters its `WorkerContext` and builds its function there (`context.build`: a model bound as a
class is instantiated in the worker, on its device); if that fails, it tells the front why (a ``failed`` frame)
and ends, and its model is not ready with that reason. Then it serves batches (`Worker`).

- **thread** (``instances=None``): a thread of the process that called ``bind``, with its own ZeroMQ context.
- **fork** (``instances=N``, CPU): fast, and the function needs no pickling; used unless the binding process has
  initialised CUDA, which a forked child cannot use.
- **spawn** (GPU placements, or CPU ones once the binding process has initialised CUDA): a new interpreter,
  ``python -c``, started with ``CUDA_VISIBLE_DEVICES`` in its environment (before anything in it can load CUDA)
  and the binding process's ``sys.path``; the job (spec and function) comes on its stdin, pickled with
  cloudpickle, so functions and classes defined in ``__main__`` or a notebook travel by value. The user's script
  is never imported again (as multiprocessing's spawn would), so it needs no ``if __name__ == "__main__"``.

A worker process asks the kernel to SIGKILL it when the thread that started it ends (`linux.die_with_parent`):
the supervisor starts processes only from its own thread, which lives as long as the owner's `Serve`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import multiprocessing
import os
import pickle
import signal
import subprocess
import sys
import warnings
from dataclasses import dataclass
from typing import Any

import wrapt
import zmq

from .context import WorkerContext, build, enter
from .errors import StartupError, client_message
from .linux import die_with_parent
from .spec import ModelSpec
from .transport.channel import WorkerChannel
from .transport.shm import Arena, segment_prefix
from .worker import ModelFunction, Terminated, Worker, user_traceback

__all__ = ["Job", "ProcessHandle", "Site", "dumps", "fork", "run_thread", "serve_job", "spawn", "spawned_main"]

log = logging.getLogger("pybind_serve")

_SPAWNED = "from pybind_serve.worker_process import spawned_main; spawned_main()"


@dataclass(frozen=True)
class Site:
    """Where workers connect (every front's ROUTER) and how their segments are named; shared by every worker of a
    `Serve`."""

    endpoints: tuple[str, ...]
    owner: str
    lifeline_fd: int
    lifeline_write_fd: int
    idle_release_s: float


@dataclass(frozen=True)
class Job:
    """One worker to start: what it serves, where, and under which name."""

    site: Site
    spec: ModelSpec
    fn: ModelFunction  # a function, or a class to build in the worker
    context: WorkerContext
    identity: str
    tag: str
    visible_devices: str | None = None  # CUDA_VISIBLE_DEVICES of a spawned worker; None: left as it is


def serve_job(job: Job, channel: WorkerChannel, pid: int | None, owner_kills: bool = False) -> bool:
    """Build the job's function, run its warmups, and serve it until stopped; False if the build or a warmup
    failed (the front was told). ``owner_kills``: a cluster backend's worker, killed by its owner (`Worker`)."""
    enter(job.context)
    site = job.site
    worker = None
    try:
        fn = build(job.fn, job.context)
        worker = Worker(job.spec, fn, channel, Arena(site.owner, job.tag), pid, site.idle_release_s, owner_kills)
        worker.warm_up()  # before its hello: an instance is ready once warm
    except Exception as exc:
        log.error("%s: worker %d could not start:\n%s", job.spec.label, job.context.instance, user_traceback(exc))
        error = client_message(str(exc) if isinstance(exc, StartupError) else f"{type(exc).__name__}: {exc}")
        channel.broadcast({"op": "failed", "model": job.spec.name, "version": job.spec.version, "error": error})
        channel.close(linger_ms=1000)  # the frame must leave before the socket goes
        if worker is not None:
            worker.close()
        return False
    worker.serve(segment_prefix(site.owner, job.tag))
    return True


def run_thread(job: Job, stop_fd: int) -> None:
    """A worker thread's body; it ends once ``stop_fd`` (its own pipe) is readable."""
    # A context of its own: if the function never returns, the owner's context can still be terminated.
    context: zmq.Context[Any] = zmq.Context()
    try:
        serve_job(job, WorkerChannel(context, job.site.endpoints, job.identity, stop_fd), None)
    finally:
        os.close(stop_fd)
        context.term()


STOP_SIGNAL = signal.SIGUSR2
"""How the supervisor stops a worker process (then SIGKILL after a grace). Not SIGTERM, which workers ignore: a
SIGTERM sent to the whole process group or cgroup (systemd's default ``KillMode``, an init forwarding to the
group, ``kill -TERM -<pgid>``) would end them mid-batch while the owner, which got it too, drains."""


def _raise_terminated(*_: Any) -> None:
    raise Terminated


def _run_process(job: Job, parent: int) -> None:
    """A worker process's body; it ends on `STOP_SIGNAL`, and when the lifeline says the owner is gone."""
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the owner, which stops us in order
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # so does a SIGTERM to the whole group: see STOP_SIGNAL
    signal.signal(STOP_SIGNAL, _raise_terminated)
    context: zmq.Context[Any] = zmq.Context()
    served = True
    try:
        channel = WorkerChannel(context, job.site.endpoints, job.identity, job.site.lifeline_fd)
        served = serve_job(job, channel, os.getpid())
    except Terminated:
        pass
    finally:
        context.destroy(linger=0)
    if not served:
        sys.exit(1)


def _forked_main(job: Job, parent: int) -> None:
    os.close(job.site.lifeline_write_fd)  # else our own copy would keep the lifeline open after the owner died
    _run_process(job, parent)


def fork(job: Job) -> multiprocessing.process.BaseProcess:
    process = multiprocessing.get_context("fork").Process(
        target=_forked_main, args=(job, os.getpid()), name=job.identity, daemon=True
    )
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork in a threaded process; the child only starts fresh sockets of its own.
        warnings.simplefilter("ignore", DeprecationWarning)
        process.start()
    return process


class ProcessHandle:
    """A spawned worker, with what the supervisor asks of a `multiprocessing.Process`: ``sentinel`` (readable once
    it has exited: a pidfd), ``join``, ``is_alive``, ``terminate``, ``kill``, ``pid``, ``exitcode``."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.sentinel = os.pidfd_open(popen.pid)

    @property
    def exitcode(self) -> int | None:
        return self._popen.poll()

    def is_alive(self) -> bool:
        return self._popen.poll() is None

    def join(self, timeout: float | None = None) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(timeout)
        if self._popen.returncode is not None and self.sentinel >= 0:
            os.close(self.sentinel)
            self.sentinel = -1

    def terminate(self) -> None:
        if self.is_alive():
            self._popen.terminate()

    def kill(self) -> None:
        if self.is_alive():
            self._popen.kill()


def dumps(obj: Any) -> bytes:
    """``obj`` pickled by cloudpickle, wrapt's function wrappers (our decorators: `batch` ...) kept as wrappers:
    they pass for the function they wrap, which cloudpickle would pickle in their place."""
    import cloudpickle  # only a binding process that spawns workers needs it

    class Pickler(cloudpickle.Pickler):
        def reducer_override(self, obj: Any) -> Any:
            if issubclass(type(obj), wrapt.FunctionWrapper):
                return _rewrap, (obj.__wrapped__, obj._self_wrapper)
            return super().reducer_override(obj)

    buffer = io.BytesIO()
    Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buffer.getvalue()


def _rewrap(wrapped: Any, wrapper: Any) -> Any:
    return wrapt.FunctionWrapper(wrapped, wrapper)


def spawn(job: Job) -> ProcessHandle:
    """Start a fresh interpreter for ``job``; its function must be picklable by cloudpickle."""
    try:
        payload = dumps((job, os.getpid()))
    except Exception as exc:
        raise TypeError(f"{job.spec.label}: the function cannot be sent to a new worker process: {exc}") from exc
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)}
    if job.visible_devices is not None:
        env["CUDA_VISIBLE_DEVICES"] = job.visible_devices
    popen = subprocess.Popen(
        [sys.executable, "-c", _SPAWNED], stdin=subprocess.PIPE, pass_fds=(job.site.lifeline_fd,), env=env
    )
    assert popen.stdin is not None
    with popen.stdin:
        popen.stdin.write(payload)
    return ProcessHandle(popen)


def spawned_main() -> None:
    """The body of a spawned worker: its job from stdin, then `_run_process`."""
    job, parent = pickle.loads(sys.stdin.buffer.read())
    _run_process(job, parent)
