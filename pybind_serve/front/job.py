"""`Job`: what a front queues for one request (the scheduler's payload)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..protocol.messages import InferRequest

if TYPE_CHECKING:
    from .trace_export import RequestTrace

__all__ = ["Job"]


@dataclass(eq=False, slots=True)
class Job:
    """What a front queues for one request: the request, and how to encode its outputs into a response.

    ``respond`` runs in the dispatcher while the outputs are still views into shared memory, so the
    response is built straight from them (one copy) before the worker reuses the memory.
    """

    request: InferRequest
    respond: Callable[[dict[str, np.ndarray]], Any]
    arrived: float
    emit: Callable[[Any], None] | None = None  # a decoupled model's responses, each as it is encoded
    trace: RequestTrace | None = None  # its trace, when the request is traced (`trace_spans`)
