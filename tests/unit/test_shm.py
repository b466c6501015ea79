"""Shared memory: the `Arena` allocator and its growth, `SegmentMap`, and the sweeping of segments.

Every test uses its own owner (``<our pid>_<token>``) and must leave no segment of this process behind.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import time
from collections.abc import Iterator
from uuid import uuid4

import numpy as np
import pytest

from pybind_serve.transport.shm import (
    Arena,
    Block,
    SegmentMap,
    new_owner,
    remove_segments_of,
    remove_stale_segments,
    segment_prefix,
)

SHM = "/dev/shm"
MIB = 1 << 20
MIN_SEGMENT = 4 * MIB


def ours() -> set[str]:
    """The segments of this process (other sessions may be creating their own meanwhile)."""
    mine = f"pybind_serve_{os.getpid()}_"
    return {name for name in os.listdir(SHM) if name.startswith(mine)}


@pytest.fixture(autouse=True)
def no_segments_left() -> Iterator[None]:
    before = ours()
    yield
    left = ours() - before
    assert not left, f"test left shared memory segments behind: {sorted(left)}"


@pytest.fixture
def owner() -> str:
    return f"{os.getpid()}_{uuid4().hex[:6]}"


@pytest.fixture
def arena(owner: str) -> Iterator[Arena]:
    arena = Arena(owner, "t")
    yield arena
    arena.close()


@pytest.fixture
def peer() -> Iterator[SegmentMap]:
    peer = SegmentMap()
    yield peer
    peer.close()


def size_of(segment: str) -> int:
    return os.stat(os.path.join(SHM, segment)).st_size


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


# --- naming --------------------------------------------------------------------------------------------------


def test_new_owner_is_pid_and_token() -> None:
    first, second = new_owner(), new_owner()
    assert re.fullmatch(rf"{os.getpid()}_[0-9a-f]{{6}}", first)
    assert first != second


def test_segment_prefix() -> None:
    assert segment_prefix("12_ab", "w0") == "pybind_serve_12_ab_w0_"
    assert segment_prefix("12_ab") == "pybind_serve_12_ab_"


def test_segments_are_named_by_owner_tag_and_count(arena: Arena, owner: str) -> None:
    block = arena.allocate(10)
    assert block == Block(f"pybind_serve_{owner}_t_0", 0, 64)
    assert os.path.exists(os.path.join(SHM, block.segment))


def test_no_segment_before_the_first_allocation(owner: str) -> None:
    arena = Arena(owner, "lazy")
    assert not [n for n in os.listdir(SHM) if n.startswith(segment_prefix(owner))]
    arena.close()


# --- allocation --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("nbytes", "expected"), [(0, 64), (1, 64), (63, 64), (64, 64), (65, 128), (1000, 1024)])
def test_blocks_are_rounded_up_to_64_bytes(arena: Arena, nbytes: int, expected: int) -> None:
    assert arena.allocate(nbytes).nbytes == expected


def test_blocks_are_aligned_and_do_not_overlap(arena: Arena) -> None:
    blocks = [arena.allocate(n) for n in (0, 1, 100, 64, 129, 0, 7)]
    assert [b.offset for b in blocks] == [0, 64, 128, 256, 320, 512, 576]
    assert all(b.offset % 64 == 0 for b in blocks)
    for first, second in itertools.pairwise(blocks):
        assert first.offset + first.nbytes <= second.offset


def test_zero_byte_blocks_are_distinct(arena: Arena) -> None:
    a, b = arena.allocate(0), arena.allocate(0)
    assert (a.segment, a.nbytes) == (b.segment, b.nbytes) == (a.segment, 64)
    assert a.offset != b.offset
    assert len(arena.view(a)) == 64


def test_a_freed_block_is_reused(arena: Arena) -> None:
    a = arena.allocate(100)
    b = arena.allocate(100)
    arena.free(a)
    assert arena.allocate(128) == a
    assert arena.allocate(1).offset == b.offset + b.nbytes


def test_first_fit_splits_a_free_range(arena: Arena) -> None:
    a, b, _ = arena.allocate(256), arena.allocate(64), arena.allocate(64)
    arena.free(a)
    first, second = arena.allocate(64), arena.allocate(128)
    assert (first.offset, second.offset) == (0, 64)
    assert arena.allocate(64).offset == 192  # what is left of a
    assert arena.allocate(64).offset == b.offset + 128  # after the last live block


def test_freed_neighbours_coalesce(arena: Arena) -> None:
    a, b, c = arena.allocate(MIB), arena.allocate(MIB), arena.allocate(2 * MIB)
    assert [a.offset, b.offset, c.offset] == [0, MIB, 2 * MIB]  # the 4 MiB segment is now full
    arena.free(b)
    arena.free(a)
    arena.free(c)
    whole = arena.allocate(MIN_SEGMENT)
    assert whole == Block(a.segment, 0, MIN_SEGMENT)


def test_freed_neighbours_coalesce_with_free_space_after_them(arena: Arena) -> None:
    a, b, c = arena.allocate(MIB), arena.allocate(MIB), arena.allocate(MIB)  # 1 MiB still free at the end
    arena.free(b)
    arena.free(a)
    arena.free(c)
    assert arena.allocate(MIN_SEGMENT) == Block(a.segment, 0, MIN_SEGMENT)


def test_separated_free_ranges_do_not_merge(arena: Arena) -> None:
    a, _, c = arena.allocate(MIB), arena.allocate(MIB), arena.allocate(2 * MIB)
    arena.free(a)
    arena.free(c)  # b still live between them: no 2 MiB+ range at offset 0
    big = arena.allocate(3 * MIB)
    assert big.segment != a.segment
    assert arena.allocate(2 * MIB) == Block(a.segment, 2 * MIB, 2 * MIB)


def test_the_first_segment_has_the_minimum_size(owner: str) -> None:
    arena = Arena(owner, "small", initial_bytes=1)
    try:
        block = arena.allocate(1)
        assert size_of(block.segment) == MIN_SEGMENT
    finally:
        arena.close()


def test_a_larger_initial_size_is_kept(owner: str) -> None:
    arena = Arena(owner, "large", initial_bytes=5 * MIB)
    try:
        assert size_of(arena.allocate(1).segment) == 5 * MIB
    finally:
        arena.close()


def test_a_full_arena_grows_a_second_segment_twice_as_big(owner: str) -> None:
    arena = Arena(owner, "g", initial_bytes=64)
    try:
        full = arena.allocate(MIN_SEGMENT)
        more = arena.allocate(64)
        assert full.segment == f"pybind_serve_{owner}_g_0"
        assert more == Block(f"pybind_serve_{owner}_g_1", 0, 64)
        assert (size_of(full.segment), size_of(more.segment)) == (MIN_SEGMENT, 2 * MIN_SEGMENT)
        arena.free(full)
        assert arena.allocate(64) == Block(full.segment, 0, 64)  # the first segment is tried first again
    finally:
        arena.close()
    assert not os.path.exists(os.path.join(SHM, full.segment))
    assert not os.path.exists(os.path.join(SHM, more.segment))


def test_idle_segments_are_released_but_the_first_and_busy_ones_stay(owner: str) -> None:
    arena = Arena(owner, "r")
    try:
        first = arena.allocate(MIN_SEGMENT)  # fills the first segment
        second = arena.allocate(64)  # a second segment of 8 MiB
        third = arena.allocate(9 * MIB)  # and a third of its own
        arena.free(first)
        arena.free(third)
        later = time.monotonic() + 60
        assert arena.release_idle(later, 10.0) == [third.segment]  # free and idle; the second holds a block
        assert not os.path.exists(os.path.join(SHM, third.segment))
        assert arena.release_idle(time.monotonic(), 10.0) == []  # nothing else idle that long
        arena.free(second)
        assert arena.release_idle(later, 10.0) == [second.segment]  # never the first segment
        assert arena.segment_count == 1
        regrown = arena.allocate(MIN_SEGMENT + 64)  # growth starts again from what is left
        assert size_of(regrown.segment) == MIN_SEGMENT + 64 and regrown.segment.endswith("_3")
    finally:
        arena.close()


def test_a_segment_used_lately_is_not_released(owner: str) -> None:
    arena = Arena(owner, "u")
    try:
        arena.allocate(MIN_SEGMENT)
        block = arena.allocate(64)
        arena.free(block)
        assert arena.release_idle(time.monotonic() + 5, 10.0) == []
        assert arena.release_idle(time.monotonic() + 11, 10.0) == [block.segment]
    finally:
        arena.close()


def test_a_segment_map_unmaps_what_it_has_not_read_lately(arena: Arena, peer: SegmentMap) -> None:
    block = arena.allocate(64)
    arena.view(block)[:3] = b"abc"
    assert bytes(peer.view(block.segment, block.offset, 3)) == b"abc"
    assert peer.release_idle(time.monotonic() + 5, 10.0) == [] and len(peer) == 1
    assert peer.release_idle(time.monotonic() + 11, 10.0) == [block.segment] and len(peer) == 0
    assert bytes(peer.view(block.segment, block.offset, 3)) == b"abc"  # mapped again when named again


def test_a_block_larger_than_the_next_segment_gets_a_segment_of_its_own(owner: str) -> None:
    arena = Arena(owner, "huge")
    try:
        block = arena.allocate(9 * MIB + 1)
        assert block.offset == 0
        assert size_of(block.segment) == block.nbytes == 9 * MIB + 64
    finally:
        arena.close()


def test_freeing_a_block_of_an_unknown_segment_is_ignored(arena: Arena) -> None:
    a = arena.allocate(64)
    arena.free(Block("pybind_serve_elsewhere_0", 0, 64))
    assert arena.allocate(64).offset == a.offset + 64


# --- views and SegmentMap ----------------------------------------------------------------------------------


def test_view_writes_are_visible_through_a_segment_map(arena: Arena, peer: SegmentMap) -> None:
    block = arena.allocate(16)
    view = arena.view(block)
    assert len(view) == 64
    view[:5] = b"hello"
    assert bytes(peer.view(block.segment, block.offset, 5)) == b"hello"
    view[:5] = b"world"  # the segment stays mapped: later writes show too
    assert bytes(peer.view(block.segment, block.offset, 5)) == b"world"
    peer.view(block.segment, block.offset + 8, 3)[:] = b"abc"  # and the peer may write back
    assert bytes(view[8:11]) == b"abc"
    del view


def test_numpy_arrays_over_blocks(arena: Arena, peer: SegmentMap) -> None:
    first, second = arena.allocate(40), arena.allocate(40)
    written = np.frombuffer(arena.view(second), dtype=np.float64, count=5)
    written[:] = np.arange(5) * 1.5
    read = np.frombuffer(peer.view(second.segment, second.offset, 40), dtype=np.float64)
    assert read.tolist() == [0.0, 1.5, 3.0, 4.5, 6.0]
    assert bytes(peer.view(first.segment, first.offset, 40)) == bytes(40)  # blocks do not overlap
    del written, read


@pytest.mark.parametrize(
    "name", ["other_segment", "pybind_serv_1_x_0", "pybind_serve_1/../../etc/passwd", "/dev/shm/pybind_serve_1"]
)
def test_segment_map_rejects_foreign_names(peer: SegmentMap, name: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"not a pybind_serve segment: {name!r}")):
        peer.view(name, 0, 1)


def test_segment_map_of_a_missing_segment(peer: SegmentMap, owner: str) -> None:
    with pytest.raises(FileNotFoundError):
        peer.view(f"pybind_serve_{owner}_none_0", 0, 1)


@pytest.mark.parametrize(("offset", "nbytes"), [(-1, 1), (MIN_SEGMENT - 4, 10), (MIN_SEGMENT, 1), (0, MIN_SEGMENT + 1)])
def test_segment_map_rejects_blocks_outside_the_segment(
    arena: Arena, peer: SegmentMap, offset: int, nbytes: int
) -> None:
    segment = arena.allocate(1).segment
    message = f"block [{offset}, {offset + nbytes}) lies outside segment {segment!r} of {MIN_SEGMENT} bytes"
    with pytest.raises(ValueError, match=re.escape(message)):
        peer.view(segment, offset, nbytes)


def test_segment_map_accepts_the_whole_segment(arena: Arena, peer: SegmentMap) -> None:
    segment = arena.allocate(1).segment
    assert len(peer.view(segment, 0, MIN_SEGMENT)) == MIN_SEGMENT
    assert len(peer.view(segment, MIN_SEGMENT, 0)) == 0


def test_forget_unmaps_only_the_named_prefix(owner: str, peer: SegmentMap) -> None:
    gone, kept = Arena(owner, "gone"), Arena(owner, "kept")
    try:
        a, b = gone.allocate(1), kept.allocate(1)
        peer.view(a.segment, 0, 1)
        peer.view(b.segment, 0, 1)
        gone.close()
        peer.forget(segment_prefix(owner, "gone"))
        with pytest.raises(FileNotFoundError):  # no stale mapping left: it must be opened anew, and is gone
            peer.view(a.segment, 0, 1)
        kept.view(b)[:1] = b"k"
        assert bytes(peer.view(b.segment, 0, 1)) == b"k"
    finally:
        gone.close()
        kept.close()


# --- cleanup -----------------------------------------------------------------------------------------------


def test_close_unlinks_every_segment_and_is_idempotent(owner: str) -> None:
    arena = Arena(owner, "c")
    names = {arena.allocate(MIN_SEGMENT).segment, arena.allocate(1).segment}
    assert len(names) == 2
    assert all(os.path.exists(os.path.join(SHM, n)) for n in names)
    arena.close()
    assert not any(os.path.exists(os.path.join(SHM, n)) for n in names)
    arena.close()


def test_close_with_a_live_numpy_view_still_unlinks(owner: str) -> None:
    arena = Arena(owner, "v")
    block = arena.allocate(8)
    array = np.frombuffer(arena.view(block), dtype=np.uint8)
    array[:] = 7
    arena.close()
    assert not os.path.exists(os.path.join(SHM, block.segment))
    assert array.tolist() == [7] * 64  # the mapping lives on until the view is collected
    del array


def test_remove_segments_of_removes_only_that_owners(owner: str) -> None:
    other = f"{os.getpid()}_{uuid4().hex[:6]}"
    mine_a, mine_b, theirs = Arena(owner, "a"), Arena(owner, "b"), Arena(other, "a")
    try:
        names = [mine_a.allocate(1).segment, mine_b.allocate(1).segment]
        their_name = theirs.allocate(1).segment
        assert sorted(remove_segments_of(owner)) == sorted(names)
        assert not any(os.path.exists(os.path.join(SHM, n)) for n in names)
        assert os.path.exists(os.path.join(SHM, their_name))
        assert remove_segments_of(owner) == []
    finally:
        mine_a.close()  # already unlinked: close must not fail
        mine_b.close()
        theirs.close()


def test_remove_segments_of_one_tag(owner: str) -> None:
    a, b = Arena(owner, "a"), Arena(owner, "b")
    try:
        name_a, name_b = a.allocate(1).segment, b.allocate(1).segment
        assert remove_segments_of(owner, "a") == [name_a]
        assert os.path.exists(os.path.join(SHM, name_b))
    finally:
        a.close()
        b.close()


def test_remove_stale_segments_removes_those_of_dead_owners_only(arena: Arena) -> None:
    dead = f"pybind_serve_{dead_pid()}_{uuid4().hex[:6]}_x_y_0"
    unparsable = f"pybind_serve_nopid_{uuid4().hex[:6]}_0"
    live = arena.allocate(1).segment
    for name in (dead, unparsable):
        with open(os.path.join(SHM, name), "wb") as f:
            f.write(b"\0" * 64)
    try:
        removed = remove_stale_segments()
        assert dead in removed
        assert live not in removed
        assert unparsable not in removed
        assert not os.path.exists(os.path.join(SHM, dead))
        assert os.path.exists(os.path.join(SHM, live))
        assert os.path.exists(os.path.join(SHM, unparsable))
    finally:
        for name in (dead, unparsable):
            if os.path.exists(os.path.join(SHM, name)):
                os.unlink(os.path.join(SHM, name))


def test_remove_stale_segments_keeps_the_segments_of_pid_1() -> None:
    # pid 1 is alive (and, in most sandboxes, not ours to signal: PermissionError means alive too)
    name = f"pybind_serve_1_{uuid4().hex[:6]}_x_0"
    path = os.path.join(SHM, name)
    open(path, "wb").close()
    try:
        assert name not in remove_stale_segments()
        assert os.path.exists(path)
    finally:
        os.unlink(path)
