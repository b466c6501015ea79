"""Just enough of the protobuf wire format to move tensor bytes in and out of gRPC messages without copies.

protobuf's Python messages copy a ``bytes`` field on parse, on assignment and again on serialization: three
copies of every tensor. The gRPC codec instead splits the ``raw_input_contents`` fields off a received message
as views into its buffer (`split_field`), and appends ``raw_output_contents`` to a serialized response as
framed pieces joined once (`field_header`). Only top-level length-delimited fields are handled; a message with
any other top-level wire type is left to protobuf (`split_field` returns None).

>>> data = b"\\n\\x01a" + field_header(7, 2) + b"xy"
>>> rest, raw = split_field(data, 7)
>>> rest, [bytes(view) for view in raw]
(b'\\n\\x01a', [b'xy'])
"""

from __future__ import annotations

__all__ = ["field_header", "split_field"]

_LENGTH_DELIMITED = 2


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


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
    return _varint(number << 3 | _LENGTH_DELIMITED) + _varint(length)


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
