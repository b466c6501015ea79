"""Just enough of the protobuf wire format to move tensor bytes in and out of gRPC messages without copies,
and to write small messages without building protobuf objects.

protobuf's Python messages copy a ``bytes`` field on parse, on assignment and again on serialization: three
copies of every tensor. The gRPC codec instead splits the ``raw_input_contents`` fields off a received message
as views into its buffer (`split_field`), and appends ``raw_output_contents`` to a serialized response as
framed pieces joined once (`field_header`). Only top-level length-delimited fields are handled; a message with
any other top-level wire type is left to protobuf (`split_field` returns None).

The writers (`string_field`, `message_field`, `varint_field`, `double_field`, `packed_varints_field`) each
return one field's bytes, tag included; a message is the concatenation of its fields. Fields equal to their
default (empty string, zero, empty list) are left out, as protobuf does.

>>> data = b"\\n\\x01a" + field_header(7, 2) + b"xy"
>>> rest, raw = split_field(data, 7)
>>> rest, [bytes(view) for view in raw]
(b'\\n\\x01a', [b'xy'])
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

__all__ = [
    "double_field",
    "field_header",
    "message_field",
    "packed_varints_field",
    "split_field",
    "string_field",
    "varint",
    "varint_field",
]

_VARINT = 0
_FIXED64 = 1
_LENGTH_DELIMITED = 2
_SMALL = [bytes((value,)) for value in range(0x80)]  # the varints of one byte, made once
_DOUBLE = struct.Struct("<d")


def varint(value: int) -> bytes:
    """``value`` as a protobuf varint; a negative int as its 64-bit two's complement (ten bytes), as int64
    fields carry it.

    >>> varint(1), varint(300), len(varint(-1))
    (b'\\x01', b'\\xac\\x02', 10)
    """
    if 0 <= value < 0x80:
        return _SMALL[value]
    if value < 0:
        value &= (1 << 64) - 1
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def string_field(number: int, value: str) -> bytes:
    """A string field (nothing for ""). ``value`` is encoded as UTF-8."""
    if not value:
        return b""
    data = value.encode()
    return _tag(number, _LENGTH_DELIMITED) + varint(len(data)) + data


def message_field(number: int, message: bytes) -> bytes:
    """An embedded message field (or a map entry) around its serialized ``message``, even an empty one."""
    return _tag(number, _LENGTH_DELIMITED) + varint(len(message)) + message


def varint_field(number: int, value: int) -> bytes:
    """An int, bool or enum field (nothing for 0 or False)."""
    return _tag(number, _VARINT) + varint(int(value)) if value else b""


def double_field(number: int, value: float) -> bytes:
    """A double field (nothing for 0.0)."""
    return _tag(number, _FIXED64) + _DOUBLE.pack(value) if value else b""


def packed_varints_field(number: int, values: Sequence[int]) -> bytes:
    """A packed repeated int field (nothing for no values)."""
    if not values:
        return b""
    data = b"".join([varint(value) for value in values])
    return _tag(number, _LENGTH_DELIMITED) + varint(len(data)) + data


def _read_varint(data: memoryview, offset: int) -> tuple[int, int]:
    """The varint at ``offset`` and the offset after it; ValueError when it runs past the end."""
    value = shift = 0
    while True:
        if offset >= len(data) or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, offset
        shift += 7


def field_header(number: int, length: int) -> bytes:
    """The tag and length that precede a length-delimited field's ``length`` bytes."""
    return _tag(number, _LENGTH_DELIMITED) + varint(length)


def split_field(data: bytes, number: int) -> tuple[bytes, list[memoryview]] | None:
    """``data`` without its top-level field ``number``, and that field's values as views into ``data``.

    None when ``data`` holds a top-level field that is not length-delimited (then protobuf must parse it);
    ValueError when it is not a well-formed message.
    """
    view = memoryview(data)
    rest: list[memoryview] = []
    values: list[memoryview] = []
    offset = 0
    while offset < len(view):
        start = offset
        tag, offset = _read_varint(view, offset)
        if tag & 7 != _LENGTH_DELIMITED:
            return None
        length, offset = _read_varint(view, offset)
        end = offset + length
        if end > len(view):
            raise ValueError(f"a field of {length} bytes runs past the end of the message")
        if tag >> 3 == number:
            values.append(view[offset:end])
        else:
            rest.append(view[start:end])
        offset = end
    return (b"".join(rest) if values else data), values
