"""Descriptor frames: `write_group` / `read_group` over shared memory, and `encode` / `decode` of frames."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import numpy as np
import pytest

from pybind_serve.transport.frames import block_of, decode, encode, read_group, write_group
from pybind_serve.transport.shm import Arena, Block, SegmentMap


def ours() -> set[str]:
    mine = f"pybind_serve_{os.getpid()}_"
    return {name for name in os.listdir("/dev/shm") if name.startswith(mine)}


@pytest.fixture(autouse=True)
def no_segments_left() -> Iterator[None]:
    before = ours()
    yield
    left = ours() - before
    assert not left, f"test left shared memory segments behind: {sorted(left)}"


@pytest.fixture
def arena() -> Iterator[Arena]:
    arena = Arena(f"{os.getpid()}_{uuid4().hex[:6]}", "f")
    yield arena
    arena.close()


@pytest.fixture
def peer() -> Iterator[SegmentMap]:
    peer = SegmentMap()
    yield peer
    peer.close()


def round_trip(arena: Arena, peer: SegmentMap, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Write through JSON, as a descriptor really travels, and read back."""
    return read_group(peer, decode(encode(write_group(arena, arrays))))


def assert_same(got: list[np.ndarray], expected: list[np.ndarray]) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape
        little = e.dtype.newbyteorder("<") if e.dtype.byteorder == ">" else e.dtype
        assert g.dtype == little
        np.testing.assert_array_equal(g, e)


# --- numeric groups ----------------------------------------------------------------------------------------


NUMERIC = [np.bool_, np.uint8, np.uint16, np.uint32, np.uint64, np.int8, np.int16, np.int32, np.int64]
NUMERIC += [np.float16, np.float32, np.float64]


@pytest.mark.parametrize("dtype", NUMERIC)
def test_round_trip_every_numeric_dtype(arena: Arena, peer: SegmentMap, dtype: Any) -> None:
    rng = np.random.default_rng(0)
    arrays = [(rng.random(shape) * 100).astype(dtype) for shape in [(2, 3), (1, 3), (4, 3)]]
    got = round_trip(arena, peer, arrays)
    assert [a.dtype for a in got] == [np.dtype(dtype)] * 3
    assert_same(got, arrays)


@pytest.mark.parametrize("shapes", [[(5,)], [(1,), (7,)], [(2, 2, 2), (1, 2, 2)], [(3, 1, 4, 1)], [()]])
def test_round_trip_shapes(arena: Arena, peer: SegmentMap, shapes: list[tuple[int, ...]]) -> None:
    arrays = [np.arange(int(np.prod(s)), dtype=np.float32).reshape(s) + 10 * i for i, s in enumerate(shapes)]
    assert_same(round_trip(arena, peer, arrays), arrays)


def test_descriptor_of_a_numeric_group(arena: Arena) -> None:
    arrays = [np.zeros((2, 3), np.float32), np.zeros((1, 3), np.float32)]
    desc = write_group(arena, arrays)
    assert desc["dtype"] == "<f4"
    assert desc["shapes"] == [[2, 3], [1, 3]]
    assert "sizes" not in desc
    segment, offset, nbytes = desc["block"]
    assert block_of(desc) == Block(segment, offset, nbytes)
    assert nbytes == 64  # 36 bytes of data in one 64-byte block


def test_arrays_are_packed_one_after_another(arena: Arena, peer: SegmentMap) -> None:
    desc = write_group(arena, [np.array([1, 2], np.int32), np.array([3], np.int32)])
    segment, offset, _ = desc["block"]
    assert bytes(peer.view(segment, offset, 12)) == np.array([1, 2, 3], "<i4").tobytes()


def test_read_group_returns_views_into_shared_memory(arena: Arena, peer: SegmentMap) -> None:
    desc = write_group(arena, [np.array([1.0, 2.0], np.float64)])
    (array,) = read_group(peer, desc)
    assert not array.flags.owndata
    np.frombuffer(arena.view(block_of(desc)), np.float64, count=2)[:] = [5.0, 6.0]
    assert array.tolist() == [5.0, 6.0]
    del array


@pytest.mark.parametrize(
    "make",
    [
        lambda: np.arange(20, dtype=np.int64)[::3],
        lambda: np.arange(24, dtype=np.float32).reshape(4, 6)[:, ::2],
        lambda: np.arange(24, dtype=np.float32).reshape(4, 6)[::-1, 1:5:2],
        lambda: np.arange(12, dtype=np.int16).reshape(3, 4).T,
        lambda: np.asfortranarray(np.arange(12, dtype=np.uint8).reshape(3, 4)),
        lambda: np.broadcast_to(np.arange(3, dtype=np.float64), (4, 3)),
    ],
)
def test_non_contiguous_inputs(arena: Arena, peer: SegmentMap, make: Any) -> None:
    source = make()
    assert not source.flags.c_contiguous
    arrays = [source, np.ascontiguousarray(source) + 1]
    got = round_trip(arena, peer, arrays)
    assert_same(got, arrays)
    assert all(a.flags.c_contiguous for a in got)


@pytest.mark.parametrize("spelling", [">f4", ">i8", ">u2", ">f8"])
def test_big_endian_inputs_are_written_little_endian(arena: Arena, peer: SegmentMap, spelling: str) -> None:
    arrays = [np.arange(6, dtype=spelling).reshape(2, 3), np.array([[7, 8, 9]], dtype=spelling)]
    desc = write_group(arena, arrays)
    assert desc["dtype"] == "<" + spelling[1:]
    got = read_group(peer, desc)
    assert [a.dtype.byteorder for a in got] in (["<", "<"], ["=", "="])
    assert [a.tolist() for a in got] == [[[0, 1, 2], [3, 4, 5]], [[7, 8, 9]]]


def test_zero_size_arrays(arena: Arena, peer: SegmentMap) -> None:
    arrays = [np.zeros((0, 3), np.float32), np.ones((2, 3), np.float32), np.zeros((0, 3), np.float32)]
    got = round_trip(arena, peer, arrays)
    assert [a.shape for a in got] == [(0, 3), (2, 3), (0, 3)]
    assert_same(got, arrays)


def test_a_group_of_only_zero_size_arrays(arena: Arena, peer: SegmentMap) -> None:
    arrays = [np.zeros((0,), np.int64), np.zeros((0, 5), np.int64)]
    got = round_trip(arena, peer, arrays)
    assert [(a.shape, a.dtype) for a in got] == [((0,), np.dtype(np.int64)), ((0, 5), np.dtype(np.int64))]


# --- BYTES groups ------------------------------------------------------------------------------------------


def test_round_trip_bytes_object_arrays(arena: Arena, peer: SegmentMap) -> None:
    arrays = [
        np.array([[b"ab", b""], [b"\x00\xff", b"xyz"]], dtype=object),
        np.array([[b"q", b"r"]], dtype=object),
    ]
    desc = write_group(arena, arrays)
    assert desc["dtype"] == "|O"
    assert desc["shapes"] == [[2, 2], [1, 2]]
    assert desc["sizes"] == [4 * 4 + 2 + 0 + 2 + 3, 2 * 4 + 2]
    got = read_group(peer, decode(encode(desc)))
    assert [a.dtype for a in got] == [np.dtype(object)] * 2
    assert [a.tolist() for a in got] == [[[b"ab", b""], [b"\x00\xff", b"xyz"]], [[b"q", b"r"]]]


@pytest.mark.parametrize(
    "array",
    [np.array(["hé", "w"], dtype=object), np.array(["hé", "w"]), np.array([b"h\xc3\xa9", b"w"], dtype="S")],
    ids=["object-str", "unicode", "bytes_"],
)
def test_strings_come_back_as_utf8_bytes(arena: Arena, peer: SegmentMap, array: np.ndarray) -> None:
    (got,) = round_trip(arena, peer, [array])
    assert got.dtype == np.dtype(object)
    assert got.tolist() == ["hé".encode(), b"w"]


def test_zero_size_bytes_arrays(arena: Arena, peer: SegmentMap) -> None:
    arrays = [np.empty((0, 2), dtype=object), np.array([[b"a", b"b"]], dtype=object)]
    got = round_trip(arena, peer, arrays)
    assert [a.shape for a in got] == [(0, 2), (1, 2)]
    assert got[1].tolist() == [[b"a", b"b"]]


def test_an_all_empty_bytes_group(arena: Arena, peer: SegmentMap) -> None:
    desc = write_group(arena, [np.empty((0,), dtype=object)])
    assert desc["sizes"] == [0]
    (got,) = read_group(peer, desc)
    assert got.shape == (0,)


def test_non_contiguous_bytes_array(arena: Arena, peer: SegmentMap) -> None:
    source = np.array([[b"a", b"b", b"c"], [b"d", b"e", b"f"]], dtype=object)
    (got,) = round_trip(arena, peer, [source[:, ::2].T])
    assert got.tolist() == [[b"a", b"d"], [b"c", b"f"]]


# --- frames ------------------------------------------------------------------------------------------------


def test_encode_is_compact_json() -> None:
    assert encode({"op": "free", "blocks": [["seg", 0, 64]]}) == b'{"op":"free","blocks":[["seg",0,64]]}'


def test_encode_numpy_scalars() -> None:
    frame = {
        "op": "result",
        "id": np.int64(7),
        "compute_us": np.float32(1.5),
        "ok": np.bool_(True),
        "nested": {"rows": [np.int32(1), np.uint8(2)], "t": np.float64(0.25)},
    }
    decoded = decode(encode(frame))
    assert decoded == {"op": "result", "id": 7, "compute_us": 1.5, "ok": True, "nested": {"rows": [1, 2], "t": 0.25}}
    assert type(decoded["id"]) is int
    assert type(decoded["ok"]) is bool


def test_encode_falls_back_to_str_for_other_objects() -> None:
    assert decode(encode({"op": "error", "message": ValueError("bad")})) == {"op": "error", "message": "bad"}


def test_decode_round_trips_a_batch_frame(arena: Arena) -> None:
    desc = write_group(arena, [np.ones((1, 2), np.float32)])
    frame = {"op": "batch", "id": 3, "inputs": {"x": desc}, "parameters": [{"p": "é"}, {}]}
    assert decode(encode(frame)) == frame
    assert block_of(decode(encode(frame))["inputs"]["x"]) == block_of(desc)
