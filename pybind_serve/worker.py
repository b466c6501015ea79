"""The loop that runs a bound function on batches: shared memory in, function call, shared memory out.

One `Worker` serves one model version over one DEALER socket, in a thread of the process that called
``bind`` or in a worker process of its own. It maps the front's input blocks as numpy views (no copy),
builds one `Request` per client request, calls the function, checks what it returned, writes the outputs
into its own arena and answers with a descriptor. The front sends ``free`` once it has encoded the
responses, and the output blocks are reused.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from .errors import InferenceError, ModelExecutionError, OutputValidationError
from .protocol.messages import ModelSpec
from .request import Request
from .tensor import Tensor
from .transport.channel import WorkerChannel
from .transport.frames import read_group, write_group
from .transport.shm import Arena, Block, SegmentMap

__all__ = ["Worker"]

log = logging.getLogger("pybind_serve.worker")

ModelFunction = Callable[[list[Request]], Any]


class Worker:
    """Serves batches of one model version until its channel says stop."""

    def __init__(self, spec: ModelSpec, fn: ModelFunction, channel: WorkerChannel, arena: Arena) -> None:
        self.spec, self.fn, self.channel, self.arena = spec, fn, channel, arena
        self.segments = SegmentMap()
        self._loop: asyncio.AbstractEventLoop | None = None

    def serve(self, segment_prefix: str) -> None:
        """Announce the worker to the front, then answer frames until stopped. Closes everything it opened."""
        try:
            self.channel.send(
                {"op": "hello", "model": self.spec.name, "version": self.spec.version, "segments": segment_prefix}
            )
            while (frame := self.channel.receive()) is not None:
                if frame["op"] == "batch":
                    self.channel.send(self.handle(frame))
                elif frame["op"] == "free":
                    for segment, offset, nbytes in frame["blocks"]:
                        self.arena.free(Block(segment, offset, nbytes))
        finally:
            self.close()

    def handle(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Run one batch frame; the answer is a result or an error frame, never an exception."""
        started = time.perf_counter()
        try:
            requests = self._requests(frame)
            responses = self._call(requests)
            outputs = self._collect(responses, requests)
            descriptors = {name: write_group(self.arena, arrays) for name, arrays in outputs.items()}
        except Exception as exc:
            return self._error_frame(frame["id"], exc)
        compute_us = int((time.perf_counter() - started) * 1e6)
        return {"op": "result", "id": frame["id"], "outputs": descriptors, "compute_us": compute_us}

    def _requests(self, frame: dict[str, Any]) -> list[Request]:
        columns = {name: read_group(self.segments, desc) for name, desc in frame["inputs"].items()}
        return [
            Request({name: arrays[i] for name, arrays in columns.items()}, parameters)
            for i, parameters in enumerate(frame["parameters"])
        ]

    def _call(self, requests: list[Request]) -> Any:
        result = self.fn(requests)
        if inspect.isawaitable(result):
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
            result = self._loop.run_until_complete(_awaited(result))
        if inspect.isgenerator(result) or inspect.isasyncgen(result):
            raise OutputValidationError(
                f"{self.spec.label}: the function returned a generator; streaming needs ModelConfig(decoupled=True)"
            )
        return result

    def _collect(self, responses: Any, requests: list[Request]) -> dict[str, list[np.ndarray]]:
        label = self.spec.label
        if not isinstance(responses, (list, tuple)) or len(responses) != len(requests):
            got = f"{len(responses)} responses" if isinstance(responses, (list, tuple)) else type(responses).__name__
            raise OutputValidationError(
                f"{label}: the function must return a list of {len(requests)} dicts (one per request), got {got}; "
                "decorate it with @batch or @sample to return one dict"
            )
        for response in responses:
            if not isinstance(response, Mapping):
                raise OutputValidationError(
                    f"{label}: each response must be a dict of outputs, got {type(response).__name__}"
                )
        if self.spec.strict:
            self._check_names(responses)
        return {
            tensor.name: [
                self._output(tensor, response, request) for response, request in zip(responses, requests, strict=True)
            ]
            for tensor in self.spec.outputs
        }

    def _check_names(self, responses: Sequence[Mapping[str, Any]]) -> None:
        declared = {t.name for t in self.spec.outputs}
        for response in responses:
            extra = sorted(set(response) - declared)
            if extra:
                raise OutputValidationError(
                    f"{self.spec.label}: outputs {extra} are not declared (declared: {sorted(declared)})"
                )

    def _output(self, tensor: Tensor, response: Mapping[str, Any], request: Request) -> np.ndarray:
        label = f"output {tensor.name!r} of {self.spec.label}"
        if tensor.name not in response:
            raise OutputValidationError(f"{label}: missing from the function's response (got {sorted(response)})")
        array = np.asarray(response[tensor.name])
        array = _conform_dtype(label, tensor, array, self.spec.strict)
        if self.spec.strict:
            _check_shape(label, tensor, array, _rows(request) if self.spec.config.batching else None)
        return array

    def _error_frame(self, batch_id: int, exc: Exception) -> dict[str, Any]:
        label = self.spec.label
        if isinstance(exc, InferenceError):
            kind, message = type(exc).__name__, str(exc) if label in str(exc) else f"{label}: {exc}"
        else:
            kind, message = ModelExecutionError.__name__, f"{label}: {type(exc).__name__}: {exc}"
        text = traceback.format_exc()
        log.error("%s failed:\n%s", label, text)
        return {"op": "error", "id": batch_id, "type": kind, "message": message, "traceback": text}

    def close(self) -> None:
        self.channel.close()
        self.segments.close()
        self.arena.close()
        if self._loop is not None:
            self._loop.close()


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _rows(request: Request) -> int:
    for array in request.values():
        return int(array.shape[0]) if array.ndim else 1
    return 1


def _conform_dtype(label: str, tensor: Tensor, array: np.ndarray, strict: bool) -> np.ndarray:
    expected = tensor.dtype
    if expected.kind == "O":
        if array.dtype.kind in "OSU":
            return array
        raise OutputValidationError(f"{label}: expected BYTES, got {array.dtype}")
    if array.dtype == expected:
        return array
    if strict or not np.can_cast(array.dtype, expected, "same_kind"):
        raise OutputValidationError(f"{label}: expected {tensor.datatype}, got {array.dtype}")
    return array.astype(expected)


def _check_shape(label: str, tensor: Tensor, array: np.ndarray, rows: int | None) -> None:
    shape = array.shape
    if rows is not None:
        if not shape or shape[0] != rows:
            raise OutputValidationError(
                f"{label}: expected {rows} rows (the request's batch size), got shape {list(shape)}"
            )
        shape = shape[1:]
    if not tensor.accepts(shape):
        expected = ([-1] if rows is not None else []) + list(tensor.shape)
        raise OutputValidationError(f"{label}: expected shape {expected}, got {list(array.shape)}")
