"""Processes and memory, read from /proc: the tree of processes a system started, its resident memory, and the
shared-memory segments it leaves behind."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

SHM = Path("/dev/shm")
STATE, PARENT, START_TIME = 0, 1, 19  # fields of /proc/PID/stat after the command name


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (which may hold spaces), or None once gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def live_parents() -> dict[int, int]:
    """pid -> parent pid of every live (non-zombie) process."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        fields = stat_fields(int(entry)) if entry.isdigit() else None
        if fields and fields[STATE] != "Z":
            parents[int(entry)] = int(fields[PARENT])
    return parents


def descendants(root: int) -> set[int]:
    """``root`` and every live process below it."""
    parents = live_parents()
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    found: set[int] = set()
    todo = [root]
    while todo:
        pid = todo.pop()
        if pid in parents and pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def status_kib(pid: int, path: str, key: str) -> int:
    """A ``key: N kB`` line of /proc/PID/<path> (0 once the process is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/{path}").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


@dataclass
class Tree:
    """The processes under ``root``, remembered once seen (by pid and start time), so that none outlives us.

    A server may start processes in sessions of their own (our front, Triton's server), but they stay its
    descendants; one that is reparented before it was ever seen is not followed.
    """

    root: int
    seen: set[tuple[int, str]] = field(default_factory=set)

    def refresh(self) -> set[int]:
        pids = descendants(self.root)
        for pid in pids:
            fields = stat_fields(pid)
            if fields:
                self.seen.add((pid, fields[START_TIME]))
        return pids

    def alive(self) -> set[int]:
        """Processes seen so far that still run (the same ones: their start time matches)."""
        alive = set()
        for pid, start in self.seen:
            fields = stat_fields(pid)
            if fields and fields[STATE] != "Z" and fields[START_TIME] == start:
                alive.add(pid)
        return alive

    def memory_kib(self) -> dict[str, int]:
        """Resident memory summed over the tree: RSS (shared pages counted in each process) and PSS (split)."""
        pids = self.refresh()
        rss = sum(status_kib(pid, "status", "VmRSS") for pid in pids)
        pss = sum(status_kib(pid, "smaps_rollup", "Pss") for pid in pids)
        return {"rss_kib": rss, "pss_kib": pss, "processes": len(pids)}

    def kill(self) -> set[int]:
        """SIGKILL every process of the tree still running; returns their pids."""
        alive = self.alive()
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return alive


class PeakSampler:
    """While entered, samples a tree's memory every ``interval_s`` in a thread; ``peak`` is the largest RSS."""

    def __init__(self, tree: Tree, interval_s: float = 0.1) -> None:
        self.tree, self.interval_s = tree, interval_s
        self.peak: dict[str, int] = {"rss_kib": 0, "pss_kib": 0, "processes": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="memory-sampler", daemon=True)

    def __enter__(self) -> PeakSampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        now = self.tree.memory_kib()
        if now["rss_kib"] > self.peak["rss_kib"]:
            self.peak = now


def shm_names() -> set[str]:
    """The names in /dev/shm now."""
    return set(os.listdir(SHM)) if SHM.is_dir() else set()


def remove_shm(names: set[str]) -> list[str]:
    """Unlink these /dev/shm entries; returns those removed."""
    removed = []
    for name in sorted(names):
        with contextlib.suppress(FileNotFoundError):
            (SHM / name).unlink()
            removed.append(name)
    return removed
