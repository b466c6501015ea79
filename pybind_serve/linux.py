"""The Linux facilities the standard library lacks: two libc calls through ctypes, dying with one's parent
(``prctl(PR_SET_PDEATHSIG)``) and giving free heap pages back to the system (glibc's ``malloc_trim``), and when a
process started (``/proc``), which tells a process from a later one given the same pid. Elsewhere the calls do
nothing: pybind_serve serves on Linux only (its shared memory is POSIX ``/dev/shm``)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal

__all__ = ["die_with_parent", "process_start_time", "trim_heap"]

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this process when the thread that forked it ends; exit at once if ``parent_pid``
    (the process that forked it) is gone already. (The signal follows the forking *thread*: fork from a thread
    that lives as long as the parent should keep its children.)"""
    prctl = getattr(_libc, "prctl", None)
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)


def trim_heap() -> None:
    """Return the C heap's free pages to the system: after a burst of large requests, freed buffers would
    otherwise keep the process's resident size at its peak."""
    malloc_trim = getattr(_libc, "malloc_trim", None)  # glibc only
    if malloc_trim is not None:
        malloc_trim(0)


def process_start_time(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (``/proc/<pid>/stat``, field 22); None if there is
    no such process. A pid and its start time name one process: a pid reused later has another start time.

    >>> process_start_time(os.getpid()) == process_start_time(os.getpid()) is not None
    True
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()  # after the command name, which may hold anything
    except OSError:
        return None
    return int(fields[19])
