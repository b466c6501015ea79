"""The internal objects the fronts, the scheduler and the workers exchange, independent of the wire format."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .shared_memory import SharedOutput

__all__ = ["InferRequest", "RequestedOutput"]


@dataclass(frozen=True)
class RequestedOutput:
    """An output the client asked for by name; ``binary`` None = the request's default; ``shared``: the window
    of a registered shared-memory region to write it into (then the response carries no data for it)."""

    name: str
    binary: bool | None = None
    shared: SharedOutput | None = None


@dataclass
class InferRequest:
    """One parsed and validated inference request.

    ``inputs`` hold arrays with the batch dim first when the model batches (``rows`` is that dim, 1 when
    it does not batch). ``parameters`` are the custom request parameters passed to the function;
    ``priority`` and ``timeout_us`` (0 = not given) are taken out of them.
    """

    model: str
    version: int
    inputs: dict[str, np.ndarray]
    rows: int = 1
    id: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    timeout_us: int = 0
    outputs: tuple[RequestedOutput, ...] | None = None
    binary_output: bool = False

    def shape_key(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """Requests may share a batch only when their inputs agree on everything but the batch dim."""
        return tuple((name, array.shape[1:]) for name, array in sorted(self.inputs.items()))
