"""The two Linux facilities the standard library lacks, called through libc with ctypes: dying with one's
parent (``prctl(PR_SET_PDEATHSIG)``) and giving free heap pages back to the system (glibc's ``malloc_trim``).
Elsewhere they do nothing: pybind_serve serves on Linux only (its shared memory is POSIX ``/dev/shm``)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal

__all__ = ["die_with_parent", "trim_heap"]

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
