"""A call's outputs, from the bytes or JSON a server answered with to numpy arrays; and the batch axis of
``infer_sample`` taken off. Anything that does not decode is the server's mistake: `InternalServerError`.

>>> read_output("y", "INT32", [2], buffer=memoryview(bytearray(8))).tolist()
[0, 0]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import InvalidInputError, UnsupportedError
from ..protocol.tensor_codec import DATATYPES, array_from_buffer, array_from_json
from .model import malformed

__all__ = ["read_output", "strip_batch_axis"]


def read_output(
    name: str, datatype: str, shape: Sequence[int], *, buffer: bytes | memoryview | None = None, data: Any = None
) -> np.ndarray:
    """Output ``name`` from its raw bytes (a view of them, no copy, except for BYTES), or else from JSON ``data``."""
    if datatype not in DATATYPES:
        raise UnsupportedError(f"output {name!r} has datatype {datatype}, which the client cannot read")
    try:
        if buffer is not None:
            return array_from_buffer(buffer, datatype, shape)
        return array_from_json(data, datatype, shape)
    except InvalidInputError as exc:
        raise malformed(f"output {name!r} that does not decode ({exc})") from None


def strip_batch_axis(outputs: Mapping[str, np.ndarray], label: str) -> dict[str, np.ndarray]:
    """The one sample of a batch of one; an output of another batch size is the server's mistake."""
    stripped = {}
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != 1:
            raise malformed(f"output {name!r} of {label} with shape {list(array.shape)} for one sample")
        stripped[name] = array[0]
    return stripped
