"""What the sans-I/O client core hands to a transport, and how a transport runs it, sync or async.

The core never touches a socket: each client operation is a *plan*, a generator that yields the steps it needs
(a `Call`: one request and how to read its reply; or a `Pause` between readiness probes) and receives each
step's result. `drive` runs a plan with a blocking transport, `drive_async` with an asyncio one; these two
loops are all that the sync and async clients do not share::

    def infer_plan():
        metadata = yield codec.model_metadata(model, options)    # a Call: sent, its reply parsed
        return (yield codec.infer(model, inputs, ...))           # the plan's result

An error raised by a step (the server's answer, a timeout, an unreachable server) is thrown into the plan at
the ``yield``, so a plan can wait through errors (`ClientCore.wait_for_model`) or let them through.

>>> def plan():
...     first = yield Call(HttpRequest("GET", "/v2/health/live", "server"), lambda reply: reply.status == 200)
...     return first
>>> drive(plan(), lambda step: step.parse(HttpReply(200, {}, b"")))
True
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from ..errors import ServeError

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "Call",
    "CallOptions",
    "GrpcReply",
    "GrpcRequest",
    "Headers",
    "HttpReply",
    "HttpRequest",
    "ModelRef",
    "Pause",
    "Plan",
    "Reply",
    "Request",
    "Step",
    "drive",
    "drive_async",
]

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class ModelRef:
    """A model on the server; ``version`` "" lets the server choose."""

    name: str
    version: str = ""

    @property
    def label(self) -> str:
        """How messages name it: ``model 'add_sub'`` or ``model 'add_sub' v2``."""
        return f"model {self.name!r}" + (f" v{self.version}" if self.version else "")


@dataclass(frozen=True)
class CallOptions:
    """What every request of a call carries: its time limit, and the extra headers (gRPC: metadata)."""

    timeout_s: float = DEFAULT_TIMEOUT_S
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HttpRequest:
    """One HTTP request; ``what`` names what it is for in the messages of transport errors."""

    method: str
    path: str
    what: str
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = DEFAULT_TIMEOUT_S


class Headers(Protocol):
    """A response's headers, looked up by name whatever its case (as `http.client` and aiohttp give them)."""

    def get(self, name: str, /) -> str | None: ...


@dataclass(frozen=True)
class HttpReply:
    """An HTTP response read in full. A bytearray body makes writable arrays."""

    status: int
    headers: Headers | Mapping[str, str]
    body: bytes | bytearray


@dataclass(frozen=True)
class GrpcRequest:
    """One call of ``inference.GRPCInferenceService``: the method name and the serialized request."""

    method: str
    what: str
    body: bytes = b""
    metadata: tuple[tuple[str, str], ...] = ()
    timeout_s: float = DEFAULT_TIMEOUT_S


@dataclass(frozen=True)
class GrpcReply:
    """A serialized response (``code`` "OK"), or the status the call ended with and its details."""

    code: str
    details: str
    body: bytes | bytearray = b""


Request = HttpRequest | GrpcRequest
Reply = HttpReply | GrpcReply


@dataclass(frozen=True)
class Call(Generic[T]):
    """A request, and how to turn its reply into the result (or raise the error it answers)."""

    request: Request
    parse: Callable[[Any], T]


@dataclass(frozen=True)
class Pause:
    """Wait this long before the next step (between readiness probes: a remote model announces nothing)."""

    seconds: float


Step = Call[Any] | Pause
Plan = Generator[Step, Any, T]


def drive(plan: Plan[T], perform: Callable[[Step], Any]) -> T:
    """Run ``plan`` to its result, performing each step with the blocking ``perform``."""
    result: Any = None
    error: ServeError | None = None
    while True:
        try:
            step = plan.send(result) if error is None else plan.throw(error)
        except StopIteration as stop:
            return stop.value
        try:
            result, error = perform(step), None
        except ServeError as exc:
            result, error = None, exc


async def drive_async(plan: Plan[T], perform: Callable[[Step], Awaitable[Any]]) -> T:
    """`drive`, awaiting each step."""
    result: Any = None
    error: ServeError | None = None
    while True:
        try:
            step = plan.send(result) if error is None else plan.throw(error)
        except StopIteration as stop:
            return stop.value
        try:
            result, error = await perform(step), None
        except ServeError as exc:
            result, error = None, exc
