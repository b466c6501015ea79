"""PyTriton's `FuturesModelClient`: the shim's `ModelClient` called on a pool of threads, each call a future."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any, TypeVar

import numpy as np

from ..model_config.triton_model_config import TritonModelConfig
from ._base import DEFAULT_INIT_TIMEOUT_S
from ._sync import ModelClient
from .exceptions import PyTritonClientClosedError, PyTritonClientQueueFullError

__all__ = ["FuturesModelClient"]

T = TypeVar("T")
Outputs = dict[str, np.ndarray]
UNBOUNDED_WORKERS = 1024  # the pool's size for max_workers=None (PyTriton: no limit)


class FuturesModelClient:
    """PyTriton's client whose calls return `concurrent.futures.Future` s (``pytriton.client.FuturesModelClient``).

    Up to ``max_workers`` calls run at once (on threads sharing one `ModelClient` and its connections), and up to
    ``max_queue_size`` more wait for a thread; a call beyond that waits for room (at most
    ``inference_timeout_s``, when given) or, with ``non_blocking=True``, raises `PyTritonClientQueueFullError`
    at once. A future's ``result()`` returns what `ModelClient`'s call returns, or raises what it raises; the
    first call waits up to ``init_timeout_s`` for the model.

    >>> def scores(client: FuturesModelClient, rows: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    ...     futures = [client.infer_sample(row) for row in rows]  # all sent at once
    ...     return [future.result() for future in futures]
    """

    def __init__(
        self,
        url: str,
        model_name: str,
        model_version: str | None = None,
        *,
        max_workers: int | None = 128,
        max_queue_size: int | None = 128,
        non_blocking: bool = False,
        init_timeout_s: float | None = None,
        inference_timeout_s: float | None = None,
    ) -> None:
        if max_workers is not None and max_workers <= 0:
            raise ValueError(f"max_workers must be > 0 (or None: no limit), got {max_workers}")
        if max_queue_size is not None and max_queue_size <= 0:
            raise ValueError(f"max_queue_size must be > 0 (or None: no limit), got {max_queue_size}")
        self._client = ModelClient(
            url,
            model_name,
            model_version,
            init_timeout_s=DEFAULT_INIT_TIMEOUT_S if init_timeout_s is None else init_timeout_s,
            inference_timeout_s=inference_timeout_s,
        )
        workers = UNBOUNDED_WORKERS if max_workers is None else max_workers
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix=f"pytriton-client-{model_name}")
        # room for the calls running and those waiting for a thread
        self._room = None if max_queue_size is None else threading.BoundedSemaphore(workers + max_queue_size)
        self._non_blocking = non_blocking
        self._put_timeout_s = inference_timeout_s
        self._lock = threading.Lock()
        self._closed = False

    def __enter__(self) -> FuturesModelClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self, wait: bool = True) -> None:
        """Take no more calls; with ``wait``, return once the calls submitted are done, else let them finish in
        the background. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if wait:
            self._shut_down()
        else:
            threading.Thread(target=self._shut_down, name="pytriton-client-close", daemon=True).start()

    def wait_for_model(self, timeout_s: float) -> Future[None]:
        """`ModelClient.wait_for_model`, as a future."""
        return self._submit(self._client.wait_for_model, timeout_s)

    def model_config(self) -> Future[TritonModelConfig]:
        """`ModelClient.model_config`, as a future."""
        return self._submit(lambda: self._client.model_config)

    def infer_sample(
        self,
        *inputs: Any,
        parameters: Mapping[str, Any] | None = None,
        headers: Mapping[str, Any] | None = None,
        **named_inputs: Any,
    ) -> Future[Outputs]:
        """`ModelClient.infer_sample`, as a future."""
        return self._submit(self._client.infer_sample, *inputs, parameters=parameters, headers=headers, **named_inputs)

    def infer_batch(
        self,
        *inputs: Any,
        parameters: Mapping[str, Any] | None = None,
        headers: Mapping[str, Any] | None = None,
        **named_inputs: Any,
    ) -> Future[Outputs]:
        """`ModelClient.infer_batch`, as a future."""
        return self._submit(self._client.infer_batch, *inputs, parameters=parameters, headers=headers, **named_inputs)

    def _submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        if self._closed:
            raise PyTritonClientClosedError("FuturesModelClient is closed")
        if self._room is not None:
            timeout_s = None if self._non_blocking else self._put_timeout_s
            if not self._room.acquire(blocking=not self._non_blocking, timeout=timeout_s):
                raise PyTritonClientQueueFullError("FuturesModelClient's queue is full")
        try:
            with self._lock:  # close() may have come while this call waited for room
                if self._closed:
                    raise PyTritonClientClosedError("FuturesModelClient is closed")
                future = self._executor.submit(fn, *args, **kwargs)
        except BaseException:
            if self._room is not None:
                self._room.release()
            raise
        if self._room is not None:
            room = self._room
            future.add_done_callback(lambda _: room.release())
        return future

    def _shut_down(self) -> None:
        self._executor.shutdown(wait=True)
        self._client.close()
