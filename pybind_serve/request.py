"""`Request`: what an undecorated bound function receives, one per client request."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

__all__ = ["STREAM_END", "Request"]


class _StreamEnd:
    """The type of `STREAM_END` (one instance)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "STREAM_END"


STREAM_END = _StreamEnd()
"""What a streaming (decoupled) function yields for a request whose stream is over, while others go on.

A decoupled function yields, at each step, one entry per request: a dict of outputs (a response), ``None``
(nothing for that request at this step) or ``STREAM_END`` (that request's stream ends now: its client gets
the final flag at once). Every stream ends when the function returns.
"""


class Request(Mapping[str, np.ndarray]):
    """One client request: a read-only mapping of input name to array, plus its ``parameters``.

    ``parameters`` holds the request's custom parameters; the server takes ``priority`` and ``timeout``
    out of them for its scheduler. With batching, every array's first dim is this request's own batch size.
    ``traceparent`` is the W3C trace context of the request's span when the server traces it (`Tracing`), else
    None: the function may start spans of its own under it (docs/tracing.md).

    >>> r = Request({"x": np.zeros((2, 3))}, parameters={"scale": 2})
    >>> r["x"].shape, r.parameters["scale"], list(r)
    ((2, 3), 2, ['x'])
    """

    __slots__ = ("_data", "parameters", "traceparent")

    def __init__(
        self,
        data: Mapping[str, np.ndarray],
        parameters: Mapping[str, Any] | None = None,
        traceparent: str | None = None,
    ) -> None:
        self._data = dict(data)
        self.parameters: dict[str, Any] = dict(parameters or {})
        self.traceparent = traceparent

    def __getitem__(self, name: str) -> np.ndarray:
        return self._data[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        tensors = ", ".join(f"{k}: {v.dtype}{list(v.shape)}" for k, v in self._data.items())
        return f"Request({{{tensors}}}, parameters={self.parameters!r})"
