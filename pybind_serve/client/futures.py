"""`FuturesModelClient`: a `ModelClient` whose calls run on a thread pool and return futures at once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any, TypeVar

import numpy as np

from ..errors import ConfigurationError, UnavailableError
from .exchange import DEFAULT_TIMEOUT_S
from .model import RemoteModelConfig
from .sync import ModelClient
from .url import ClientTls

__all__ = ["FuturesModelClient"]

T = TypeVar("T")
Outputs = dict[str, np.ndarray]
DEFAULT_MAX_WORKERS = 32


class FuturesModelClient:
    """`ModelClient`'s calls as `concurrent.futures.Future` s: up to ``max_workers`` calls run at once, each on
    a thread of the client's pool (sharing its keep-alive connections); a future's ``result()`` returns what
    the call returns, or raises what it raises.

    >>> def scores(client: FuturesModelClient, rows: list[list[float]]) -> list[dict[str, np.ndarray]]:
    ...     futures = [client.infer_sample(x=row) for row in rows]  # all sent at once
    ...     return [future.result() for future in futures]
    """

    def __init__(
        self,
        url: str,
        model: str,
        *,
        version: int | str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        headers: Mapping[str, str] | None = None,
        max_workers: int = DEFAULT_MAX_WORKERS,
        shared_memory: bool = False,
        access_token: str | None = None,
        tls: ClientTls | None = None,
    ) -> None:
        if type(max_workers) is not int or max_workers < 1:
            raise ConfigurationError(f"max_workers must be an int >= 1, got {max_workers!r}")
        self._client = ModelClient(
            url,
            model,
            version=version,
            timeout_s=timeout_s,
            headers=headers,
            shared_memory=shared_memory,
            access_token=access_token,
            tls=tls,
        )
        self._executor = ThreadPoolExecutor(max_workers, thread_name_prefix=f"pybind_serve-client-{model}")
        self._lock = threading.Lock()
        self._closed = False

    @property
    def url(self) -> str:
        return self._client.url

    @property
    def model_name(self) -> str:
        return self._client.model_name

    @property
    def model_version(self) -> str:
        return self._client.model_version

    def infer_sample(
        self,
        *inputs: Any,
        parameters: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        priority: int | None = None,
        timeout_s: float | None = None,
        outputs: Sequence[str] | None = None,
        **named_inputs: Any,
    ) -> Future[Outputs]:
        """`ModelClient.infer_sample`, as a future."""
        call = self._client.infer_sample
        options = dict(parameters=parameters, headers=headers, priority=priority, timeout_s=timeout_s, outputs=outputs)
        return self._submit(call, *inputs, **options, **named_inputs)

    def infer_batch(
        self,
        *inputs: Any,
        parameters: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        priority: int | None = None,
        timeout_s: float | None = None,
        outputs: Sequence[str] | None = None,
        **named_inputs: Any,
    ) -> Future[Outputs]:
        """`ModelClient.infer_batch`, as a future."""
        call = self._client.infer_batch
        options = dict(parameters=parameters, headers=headers, priority=priority, timeout_s=timeout_s, outputs=outputs)
        return self._submit(call, *inputs, **options, **named_inputs)

    def model_config(self) -> Future[RemoteModelConfig]:
        """`ModelClient.model_config`, as a future."""
        return self._submit(lambda: self._client.model_config)

    def wait_for_model(self, timeout_s: float) -> Future[None]:
        """`ModelClient.wait_for_model`, as a future."""
        return self._submit(self._client.wait_for_model, timeout_s)

    def is_model_ready(self, *, timeout_s: float | None = None) -> Future[bool]:
        """`ModelClient.is_model_ready`, as a future."""
        return self._submit(self._client.is_model_ready, timeout_s=timeout_s)

    def load_model(self) -> Future[None]:
        """`ModelClient.load_model`, as a future."""
        return self._submit(self._client.load_model)

    def unload_model(self) -> Future[None]:
        """`ModelClient.unload_model`, as a future."""
        return self._submit(self._client.unload_model)

    def close(self, *, wait: bool = True) -> None:
        """Stop taking calls; wait for those submitted (``wait``), or cancel those not started. Idempotent."""
        with self._lock:
            self._closed = True
        self._executor.shutdown(wait=wait, cancel_futures=not wait)
        self._client.close()

    def __enter__(self) -> FuturesModelClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<FuturesModelClient of model {self.model_name!r} at {self.url}>"

    def _submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        with self._lock:  # shutdown() would raise RuntimeError: say it our way
            if self._closed:
                raise UnavailableError(f"model {self.model_name!r}: this FuturesModelClient was closed")
            return self._executor.submit(fn, *args, **kwargs)
