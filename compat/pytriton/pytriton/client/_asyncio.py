"""PyTriton's asyncio clients, `AsyncioModelClient` and `AsyncioDecoupledModelClient`, on
`pybind_serve.client`'s."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Mapping
from types import TracebackType
from typing import Any, TypeVar

import numpy as np

import pybind_serve.client as serve_client
from pybind_serve.errors import ServeError

from ..model_config.triton_model_config import TritonModelConfig
from ._base import (
    STREAM_TIME_LIMIT_S,
    BaseModelClient,
    check_batching,
    check_inputs,
    check_model_kind,
    check_parameters,
    header_strings,
)
from ._model_config import triton_model_config
from ._translate import pytriton_errors, translate
from .exceptions import PyTritonClientTimeoutError, PyTritonClientValueError

__all__ = ["AsyncioDecoupledModelClient", "AsyncioModelClient"]

Outputs = dict[str, np.ndarray]
Client = TypeVar("Client", bound="AsyncioModelClient")


class AsyncioModelClient(BaseModelClient):
    """PyTriton's asyncio client of a model (``pytriton.client.AsyncioModelClient``): `ModelClient`'s arguments,
    calls and errors, awaited; ``await client.model_config`` reads the config. With ``lazy_init=False``, entering
    ``async with`` waits for the model. Many calls may be in flight at once.

    >>> async def scores(url: str, rows: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    ...     async with AsyncioModelClient(url, "double", lazy_init=False) as client:
    ...         return await asyncio.gather(*(client.infer_sample(row) for row in rows))
    """

    def __init__(
        self,
        url: str,
        model_name: str,
        model_version: str | None = None,
        *,
        lazy_init: bool = True,
        init_timeout_s: float | None = None,
        inference_timeout_s: float | None = None,
        model_config: TritonModelConfig | None = None,
        ensure_model_is_ready: bool = True,
        access_token: str | None = None,
    ) -> None:
        super().__init__(
            url,
            model_name,
            model_version,
            lazy_init=lazy_init,
            init_timeout_s=init_timeout_s,
            inference_timeout_s=inference_timeout_s,
            model_config=model_config,
            ensure_model_is_ready=ensure_model_is_ready,
            access_token=access_token,
        )

    def _open(self) -> Any:
        return serve_client.AsyncModelClient(self._url, self._model_name, **self._client_arguments())

    async def __aenter__(self: Client) -> Client:
        if not self._lazy_init:
            try:
                await self._init_model()
            except BaseException:
                await self.close()
                raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connections; later calls raise `PyTritonClientClosedError`. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with pytriton_errors():
            await self._client.close()

    async def wait_for_model(self, timeout_s: float) -> None:
        """Return once the server and the model are ready; `PyTritonClientTimeoutError` if not within
        ``timeout_s``."""
        self._check_open()
        with pytriton_errors(waiting=True):
            await self._client.wait_for_model(timeout_s)

    @property
    def model_config(self) -> Awaitable[TritonModelConfig]:
        """The model's config (``await client.model_config``), read from the server once, waiting up to
        ``init_timeout_s`` for the model."""
        return self._read_model_config()

    async def infer_sample(
        self,
        *inputs: Any,
        parameters: Mapping[str, Any] | None = None,
        headers: Mapping[str, Any] | None = None,
        **named_inputs: Any,
    ) -> Outputs:
        """As `ModelClient.infer_sample`."""
        return await self._infer(inputs, named_inputs, parameters, headers, sample=True)

    async def infer_batch(
        self,
        *inputs: Any,
        parameters: Mapping[str, Any] | None = None,
        headers: Mapping[str, Any] | None = None,
        **named_inputs: Any,
    ) -> Outputs:
        """As `ModelClient.infer_batch`."""
        return await self._infer(inputs, named_inputs, parameters, headers, sample=False)

    async def _infer(
        self,
        inputs: tuple[Any, ...],
        named_inputs: Mapping[str, Any],
        parameters: Mapping[str, Any] | None,
        headers: Mapping[str, Any] | None,
        *,
        sample: bool,
    ) -> Outputs:
        config = await self._prepare(inputs, named_inputs, parameters, headers, sample=sample)
        check_model_kind(config, decoupled_client=False)
        call = self._client.infer_sample if sample else self._client.infer_batch
        with pytriton_errors():
            result: Outputs = await call(
                *(inputs or (named_inputs,)), parameters=parameters, headers=header_strings(headers)
            )
        return result

    async def _prepare(
        self,
        inputs: tuple[Any, ...],
        named_inputs: Mapping[str, Any],
        parameters: Mapping[str, Any] | None,
        headers: Mapping[str, Any] | None,
        *,
        sample: bool,
    ) -> TritonModelConfig:
        check_inputs(inputs, named_inputs)
        check_parameters(parameters, "parameters")
        check_parameters(headers, "headers")
        self._check_open()
        if not self._model_ready:
            await self._init_model()
        config = await self._read_model_config()
        if not sample:
            check_batching(config)
        return config

    async def _read_model_config(self) -> TritonModelConfig:
        if self._model_config is None:
            await self._init_model()
        assert self._model_config is not None
        return self._model_config

    async def _init_model(self) -> None:
        """Wait up to ``init_timeout_s`` for the model, then read its config (unless given); as
        `ModelClient`'s, calls that come together each wait."""
        await self.wait_for_model(self._init_timeout_s)
        self._model_ready = True
        if self._model_config is None:
            with pytriton_errors(waiting=True):
                self._model_config = triton_model_config(await self._client.model_config())


class AsyncioDecoupledModelClient(AsyncioModelClient):
    """PyTriton's asyncio client of a decoupled model (``pytriton.client.AsyncioDecoupledModelClient``), over
    gRPC streaming: ``async for outputs in client.infer_sample(...)``. Each response must come within
    ``inference_timeout_s`` of the previous one (`PyTritonClientTimeoutError`); an ``http://`` URL raises
    `PyTritonClientValueError` when the iteration starts, as in PyTriton.
    """

    def _open(self) -> Any:
        if self._triton_url.scheme != "grpc":  # refused at the first call, as PyTriton does; until then, the plain
            return super()._open()  # client answers model_config and wait_for_model
        return serve_client.AsyncDecoupledModelClient(self._url, self._model_name, **self._client_arguments())

    def infer_sample(  # type: ignore[override]
        self,
        *inputs: Any,
        parameters: Mapping[str, Any] | None = None,
        headers: Mapping[str, Any] | None = None,
        **named_inputs: Any,
    ) -> AsyncIterator[Outputs]:
        """The outputs of each response to one sample (as `ModelClient.infer_sample`)."""
        return self._stream(inputs, named_inputs, parameters, headers, sample=True)

    def infer_batch(  # type: ignore[override]
        self,
        *inputs: Any,
        parameters: Mapping[str, Any] | None = None,
        headers: Mapping[str, Any] | None = None,
        **named_inputs: Any,
    ) -> AsyncIterator[Outputs]:
        """The outputs of each response to one batch (as `ModelClient.infer_batch`)."""
        return self._stream(inputs, named_inputs, parameters, headers, sample=False)

    async def _stream(
        self,
        inputs: tuple[Any, ...],
        named_inputs: Mapping[str, Any],
        parameters: Mapping[str, Any] | None,
        headers: Mapping[str, Any] | None,
        *,
        sample: bool,
    ) -> AsyncIterator[Outputs]:
        config = await self._prepare(inputs, named_inputs, parameters, headers, sample=sample)
        check_model_kind(config, decoupled_client=True)
        if self._triton_url.scheme != "grpc":
            raise PyTritonClientValueError(f"AsyncioDecoupledModelClient needs a grpc:// URL, got {self._url}")
        call = self._client.infer_sample if sample else self._client.infer_batch
        responses = call(
            *(inputs or (named_inputs,)),
            parameters=parameters,
            headers=header_strings(headers),
            timeout_s=STREAM_TIME_LIMIT_S,
        )
        async with contextlib.aclosing(responses):
            while True:
                try:
                    outputs = await asyncio.wait_for(anext(responses), self._inference_timeout_s)
                except StopAsyncIteration:
                    return
                except asyncio.TimeoutError:
                    raise PyTritonClientTimeoutError(
                        f"No response of model {self._model_name} within inference_timeout_s="
                        f"{self._inference_timeout_s:g}"
                    ) from None
                except ServeError as error:
                    raise translate(error) from error
                yield outputs
