"""The asyncio clients: `AsyncModelClient` and `AsyncDecoupledModelClient`, the same plans as `sync` run on an
asyncio transport. A client belongs to the event loop of its first call."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar

import numpy as np

from .core import ClientBase, InferOptions, with_token
from .exchange import DEFAULT_TIMEOUT_S, Call, Pause, Plan, Step, drive_async
from .grpc_codec import StreamResponse
from .model import RemoteModelConfig
from .transport import AsyncStreamTransport, AsyncTransport, open_async, open_async_stream
from .url import ClientTls

__all__ = ["AsyncDecoupledModelClient", "AsyncModelClient"]

T = TypeVar("T")
Outputs = dict[str, np.ndarray]
Client = TypeVar("Client", bound="_Async")


class _Async(ClientBase):
    """What the asyncio clients share: the model's state, and running a plan on the transport."""

    _transport: AsyncTransport

    async def model_config(self) -> RemoteModelConfig:
        """The model's config (Triton's model configuration extension), read from the server once."""
        return await self._run(self._core.model_config())

    async def wait_for_model(self, timeout_s: float) -> None:
        """As `ModelClient.wait_for_model`."""
        await self._run(self._core.wait_for_model(timeout_s))

    async def is_model_ready(self, *, timeout_s: float | None = None) -> bool:
        """As `ModelClient.is_model_ready`."""
        return await self._run(self._core.is_model_ready(timeout_s))

    async def load_model(self) -> None:
        """As `ModelClient.load_model`."""
        await self._run(self._core.load_model())

    async def unload_model(self) -> None:
        """As `ModelClient.unload_model`."""
        await self._run(self._core.unload_model())

    async def close(self) -> None:
        """Unregister the shared-memory regions (``shared_memory=True``) and close the connections; later calls
        raise `UnavailableError`. Idempotent."""
        await self._run(self._core.release_regions())
        await self._transport.close()

    async def __aenter__(self: Client) -> Client:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._core!r}>"

    async def _run(self, plan: Plan[T]) -> T:
        return await drive_async(plan, self._perform)

    async def _perform(self, step: Step) -> Any:
        if isinstance(step, Pause):
            await asyncio.sleep(step.seconds)
            return None
        return step.parse(await self._transport.send(step.request))


class AsyncModelClient(_Async):
    """`ModelClient` for asyncio: the same arguments, calls and errors, awaited; ``model_config()`` is a
    coroutine method. Many calls may be in flight at once (``asyncio.gather``).

    >>> import asyncio
    >>> async def main(url: str) -> None:
    ...     async with AsyncModelClient(url, "double") as client:
    ...         await client.wait_for_model(10)
    ...         answers = await asyncio.gather(*(client.infer_sample(x=[i, i]) for i in range(8)))
    """

    def __init__(
        self,
        url: str,
        model: str,
        *,
        version: int | str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        headers: Mapping[str, str] | None = None,
        shared_memory: bool = False,
        access_token: str | None = None,
        tls: ClientTls | None = None,
    ) -> None:
        headers = with_token(headers, access_token)
        super().__init__(
            url, model, version=version, timeout_s=timeout_s, headers=headers, shared_memory=shared_memory, tls=tls
        )
        self._transport = open_async(self._core.endpoint)

    async def infer_sample(
        self,
        *inputs: Any,
        parameters: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        priority: int | None = None,
        timeout_s: float | None = None,
        outputs: Sequence[str] | None = None,
        **named_inputs: Any,
    ) -> Outputs:
        """As `ModelClient.infer_sample`."""
        options = InferOptions(parameters, headers, priority, timeout_s, outputs)
        return await self._run(self._core.infer(inputs, named_inputs, options, sample=True))

    async def infer_batch(
        self,
        *inputs: Any,
        parameters: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        priority: int | None = None,
        timeout_s: float | None = None,
        outputs: Sequence[str] | None = None,
        **named_inputs: Any,
    ) -> Outputs:
        """As `ModelClient.infer_batch`."""
        options = InferOptions(parameters, headers, priority, timeout_s, outputs)
        return await self._run(self._core.infer(inputs, named_inputs, options, sample=False))


class AsyncDecoupledModelClient(_Async):
    """`DecoupledModelClient` for asyncio: each call is an async iterator of the responses' outputs
    (``async for outputs in client.infer_sample(x=...)``)."""

    _transport: AsyncStreamTransport

    def __init__(
        self,
        url: str,
        model: str,
        *,
        version: int | str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        headers: Mapping[str, str] | None = None,
        shared_memory: bool = False,
        access_token: str | None = None,
        tls: ClientTls | None = None,
    ) -> None:
        headers = with_token(headers, access_token)
        super().__init__(
            url, model, version=version, timeout_s=timeout_s, headers=headers, shared_memory=shared_memory, tls=tls
        )
        self._transport = open_async_stream(self._core.endpoint)

    def infer_sample(
        self,
        *inputs: Any,
        parameters: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        priority: int | None = None,
        timeout_s: float | None = None,
        outputs: Sequence[str] | None = None,
        **named_inputs: Any,
    ) -> AsyncIterator[Outputs]:
        """As `DecoupledModelClient.infer_sample`."""
        options = InferOptions(parameters, headers, priority, timeout_s, outputs)
        return self._responses(self._core.stream(inputs, named_inputs, options, sample=True))

    def infer_batch(
        self,
        *inputs: Any,
        parameters: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        priority: int | None = None,
        timeout_s: float | None = None,
        outputs: Sequence[str] | None = None,
        **named_inputs: Any,
    ) -> AsyncIterator[Outputs]:
        """As `DecoupledModelClient.infer_batch`."""
        options = InferOptions(parameters, headers, priority, timeout_s, outputs)
        return self._responses(self._core.stream(inputs, named_inputs, options, sample=False))

    async def _responses(self, plan: Plan[Call[StreamResponse]]) -> AsyncIterator[Outputs]:
        call = await self._run(plan)
        # aclosing: leaving early ends the gRPC call now, not when the generator is collected
        async with contextlib.aclosing(self._transport.stream(call.request)) as replies:  # type: ignore[arg-type]
            async for reply in replies:
                response = call.parse(reply)
                if response.outputs:  # an empty final response only says that the stream is over
                    yield response.outputs
                if response.final:
                    return
