"""Shared-memory segments: the `Arena` a process writes tensors into, and the `SegmentMap` a peer reads them from.

Tensor bytes never travel through ZeroMQ: the writer copies them once into a block of its arena and sends
``(segment, offset, nbytes)``; the reader maps the segment once and views the block as a numpy array.

Every segment is a file ``/dev/shm/pybind_serve_<owner>_<tag>_<n>`` where ``owner`` is ``<pid>_<token>``:
the pid of the process that created the `Serve` and a token of that `Serve`. The pid lets any process sweep
the segments of a server that died (`remove_stale_segments`); the owner lets the front and the `Serve`
remove every segment of their server at exit (`remove_segments_of`), and no other. This is Linux's POSIX
shared memory; other systems are not supported.

Memory follows the load: an arena grows by adding segments during a burst, and `Arena.release_idle` gives back
the segments it added that have been entirely free for a while (the first one stays); a reader's
`SegmentMap.release_idle` unmaps what it has not read for as long. A segment's pages return to the system once
it is unlinked and no process maps it any more.

>>> arena = Arena(owner=f"{os.getpid()}_doc", tag="a")
>>> block = arena.allocate(12)
>>> arena.view(block)[:3] = b"abc"
>>> peer = SegmentMap()
>>> bytes(peer.view(block.segment, block.offset, 3))
b'abc'
>>> peer.close(); arena.close()
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import re
import secrets
import time
from dataclasses import dataclass

from ..errors import SharedMemoryFullError

__all__ = [
    "Arena",
    "Block",
    "front_tag",
    "SegmentMap",
    "new_owner",
    "remove_segments_of",
    "remove_stale_segments",
    "segment_prefix",
]

SHM_DIR = "/dev/shm"
PREFIX = "pybind_serve_"
_ALIGN = 64  # cache-line aligned blocks: numpy views never straddle lines needlessly
_NAME = re.compile(rf"^{PREFIX}(\d+)_")
_MIN_SEGMENT = 4 << 20


@dataclass(frozen=True)
class Block:
    """A block of an arena: what a descriptor names."""

    segment: str
    offset: int
    nbytes: int


class _Segment:
    """One mapped /dev/shm file."""

    def __init__(self, name: str, size: int, create: bool) -> None:
        path = os.path.join(SHM_DIR, name)
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        fd = os.open(path, flags, 0o600)
        try:
            if create:
                _reserve(fd, path, size)
            else:
                size = os.fstat(fd).st_size
            self.mmap = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.name, self.size = name, size
        self.buffer = memoryview(self.mmap)
        self.used_at = time.monotonic()

    def close(self) -> None:
        self.buffer.release()
        # A numpy view may still borrow the mapping; then it is unmapped when that view is collected.
        with contextlib.suppress(BufferError):
            self.mmap.close()


def _reserve(fd: int, path: str, size: int) -> None:
    """Size a new segment with its pages taken now, so that a full /dev/shm is an error here
    (`SharedMemoryFullError`) instead of a SIGBUS, which kills the process, when a page is first written."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # a file system without fallocate: sparse, as before
            os.ftruncate(fd, size)
            return
        os.unlink(path)
        if exc.errno not in (errno.ENOSPC, errno.ENOMEM, errno.EFBIG):
            raise
        stats = os.statvfs(os.path.dirname(path))
        free = stats.f_bavail * stats.f_frsize
        raise SharedMemoryFullError(
            f"shared memory is full: a segment of {size >> 20} MiB does not fit in {os.path.dirname(path)} "
            f"({free >> 20} MiB free of {(stats.f_blocks * stats.f_frsize) >> 20} MiB); give the server more "
            "(docker run --shm-size, a Kubernetes emptyDir with medium: Memory)"
        ) from None


class _FreeList:
    """First-fit free ranges of one segment, coalesced on free. Few blocks are live at once (one per tensor of
    each in-flight batch), so a sorted list beats anything cleverer."""

    def __init__(self, size: int) -> None:
        self.ranges: list[tuple[int, int]] = [(0, size)]

    def take(self, nbytes: int) -> int | None:
        for i, (start, length) in enumerate(self.ranges):
            if length >= nbytes:
                if length == nbytes:
                    del self.ranges[i]
                else:
                    self.ranges[i] = (start + nbytes, length - nbytes)
                return start
        return None

    def give(self, start: int, nbytes: int) -> None:
        ranges = self.ranges
        i = 0
        while i < len(ranges) and ranges[i][0] < start:
            i += 1
        ranges.insert(i, (start, nbytes))
        if i + 1 < len(ranges) and start + nbytes == ranges[i + 1][0]:
            ranges[i] = (start, nbytes + ranges[i + 1][1])
            del ranges[i + 1]
        if i > 0 and ranges[i - 1][0] + ranges[i - 1][1] == start:
            ranges[i - 1] = (ranges[i - 1][0], ranges[i - 1][1] + ranges[i][1])
            del ranges[i]


class Arena:
    """The segments one process writes into, with a block allocator; grows by adding segments."""

    def __init__(self, owner: str, tag: str, initial_bytes: int = _MIN_SEGMENT) -> None:
        self._prefix = segment_prefix(owner, tag)
        self._segments: dict[str, _Segment] = {}
        self._free: dict[str, _FreeList] = {}
        self._next_size = max(initial_bytes, _MIN_SEGMENT)
        self._count = 0

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    def allocate(self, nbytes: int) -> Block:
        """A block of at least ``nbytes`` (0 is allowed); `free` gives it back."""
        size = max(_ALIGN, -(-nbytes // _ALIGN) * _ALIGN)
        for name, free in self._free.items():
            offset = free.take(size)
            if offset is not None:
                self._segments[name].used_at = time.monotonic()
                return Block(name, offset, size)
        name = self._grow(size)
        offset = self._free[name].take(size)
        assert offset is not None  # a fresh segment always holds the block it was sized for
        return Block(name, offset, size)

    def release_idle(self, now: float, idle_s: float) -> list[str]:
        """Unlink the segments, all but the first, that are entirely free and had no block taken from them in
        the ``idle_s`` before ``now`` (`time.monotonic`); their names. Growth starts again from what is left."""
        first = next(iter(self._segments), None)
        released = [
            name
            for name, segment in self._segments.items()
            if name != first and segment.used_at <= now - idle_s and self._free[name].ranges == [(0, segment.size)]
        ]
        for name in released:
            segment = self._segments.pop(name)
            del self._free[name]
            segment.close()
            _unlink(name)
        if released:
            self._next_size = max(_MIN_SEGMENT, sum(segment.size for segment in self._segments.values()))
        return released

    def _grow(self, at_least: int) -> str:
        size = max(self._next_size, at_least)
        name = f"{self._prefix}{self._count}"
        self._count += 1
        self._segments[name] = _Segment(name, size, create=True)  # SharedMemoryFullError: no growth recorded
        self._next_size = size * 2
        self._free[name] = _FreeList(size)
        return name

    def free(self, block: Block) -> None:
        free = self._free.get(block.segment)
        if free is not None:
            free.give(block.offset, block.nbytes)

    def view(self, block: Block) -> memoryview:
        """The writable bytes of a block."""
        return self._segments[block.segment].buffer[block.offset : block.offset + block.nbytes]

    def close(self) -> None:
        """Unmap and unlink every segment; idempotent."""
        for segment in self._segments.values():
            segment.close()
            _unlink(segment.name)
        self._segments.clear()
        self._free.clear()


class SegmentMap:
    """Segments of other processes, mapped on first use and kept mapped."""

    def __init__(self) -> None:
        self._segments: dict[str, _Segment] = {}

    def __len__(self) -> int:
        return len(self._segments)

    def view(self, segment: str, offset: int, nbytes: int) -> memoryview:
        mapped = self._segments.get(segment)
        if mapped is None:
            if not segment.startswith(PREFIX) or "/" in segment:
                raise ValueError(f"not a pybind_serve segment: {segment!r}")
            mapped = self._segments[segment] = _Segment(segment, 0, create=False)
        else:
            mapped.used_at = time.monotonic()
        if offset < 0 or offset + nbytes > mapped.size:
            raise ValueError(
                f"block [{offset}, {offset + nbytes}) lies outside segment {segment!r} of {mapped.size} bytes"
            )
        return mapped.buffer[offset : offset + nbytes]

    def release_idle(self, now: float, idle_s: float) -> list[str]:
        """Unmap the segments not read in the ``idle_s`` before ``now``; their names. (A block named later is
        mapped again; a view still in use keeps its mapping alive until it is collected.)"""
        released = [name for name, segment in self._segments.items() if segment.used_at <= now - idle_s]
        for name in released:
            self._segments.pop(name).close()
        return released

    def forget(self, prefix: str) -> None:
        """Unmap the segments whose name starts with ``prefix`` (those of a worker that is gone)."""
        for name in [n for n in self._segments if n.startswith(prefix)]:
            self._segments.pop(name).close()

    def close(self) -> None:
        for segment in self._segments.values():
            segment.close()
        self._segments.clear()


def _unlink(name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(SHM_DIR, name))


def _segment_names() -> list[str]:
    try:
        return [n for n in os.listdir(SHM_DIR) if n.startswith(PREFIX)]
    except FileNotFoundError:
        return []


def new_owner() -> str:
    """A fresh owner name for one `Serve`: ``<pid>_<token>``."""
    return f"{os.getpid()}_{secrets.token_hex(3)}"


def segment_prefix(owner: str, tag: str = "") -> str:
    """The name prefix of the segments of one server, or of one of its arenas given ``tag``."""
    return f"{PREFIX}{owner}_{tag}_" if tag else f"{PREFIX}{owner}_"


def front_tag(index: int, pid: int) -> str:
    """The arena tag of front process ``index`` (pid ``pid``): a restarted front never meets its predecessor's
    segments, which the owner removes."""
    return f"front{index}p{pid}"


def remove_segments_of(owner: str, tag: str = "") -> list[str]:
    """Unlink every segment of one server (only those of one arena, given ``tag``)."""
    prefix = segment_prefix(owner, tag)
    removed = [n for n in _segment_names() if n.startswith(prefix)]
    for name in removed:
        _unlink(name)
    return removed


def process_alive(pid: int) -> bool:
    """Whether a process of that pid exists (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_segments() -> list[str]:
    """Unlink the segments of servers whose owner process is dead (killed before it could clean up)."""
    removed = []
    for name in _segment_names():
        match = _NAME.match(name)
        if match and not process_alive(int(match.group(1))):
            _unlink(name)
            removed.append(name)
    return removed
