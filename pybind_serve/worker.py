"""The loop that runs a bound function on batches: shared memory in, function call, shared memory out.

One `Worker` serves one model version, in a thread of the process that called ``bind`` or in a worker
process of its own, to every front process (a DEALER socket to each: `WorkerChannel`); each batch is answered
to the front it came from, one batch at a time in the order they came. It maps the front's input blocks as
numpy views (no copy), builds one `Request` per client request, calls the function, checks what it returned,
writes the outputs into its own arena and answers with a descriptor. The front sends ``free`` once it has
encoded the responses, and the output blocks are reused. A batch that carries ``trace`` (some of its requests are
traced: each one's W3C traceparent, which its `Request` gets) is answered with ``times``: when it was received,
when its inputs were read, when the function returned and when the outputs were written (`time.monotonic_ns`,
the clock every process of the host shares; on a failure, the last is when it failed).

A failing function answers every request of its batch with the error (the client sees it), whatever it raised
(``sys.exit()`` and ``KeyboardInterrupt`` included: they end the call, not the worker), and is logged by a
`FailureLog` that never floods: in a notebook the log lands in a cell, so a burst of failures must not print
a traceback per batch. Only `Terminated` (raised by a worker process's stop-signal handler) stops the worker.

Shared memory follows the load: once the worker has had no frame for ``idle_release_s``, it gives back the
segments a burst made it grow (`Arena.release_idle`, `SegmentMap.release_idle`) and the C heap's free pages.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import re
import time
import traceback
from collections.abc import Callable, Generator, Mapping, Sequence
from contextlib import closing
from functools import partial
from typing import Any

import numpy as np
import wrapt
import zmq.asyncio

from .errors import (
    MAX_MESSAGE_CHARS,
    InferenceError,
    ModelExecutionError,
    OutputValidationError,
    StartupError,
    client_message,
)
from .linux import trim_heap
from .request import STREAM_END, Request
from .spec import ModelSpec
from .tensor import Tensor
from .torch_outputs import from_torch, is_torch_tensor
from .transport.channel import Empty, WorkerChannel
from .transport.frames import decode, encode, read_group, write_group
from .transport.inline import pack_group, unpack_group
from .transport.network import parse_parts, to_parts
from .transport.shm import Arena, Block, SegmentMap

__all__ = ["FailureLog", "Terminated", "Worker"]

log = logging.getLogger("pybind_serve.worker")

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep

ModelFunction = Callable[[list[Request]], Any]


class Terminated(BaseException):
    """Raised by a worker process's stop-signal handler (`worker_process.STOP_SIGNAL`): the owner stops the worker
    (it is never a batch's error)."""


class Worker:
    """Serves batches of one model version until its channel says stop.

    ``pid`` is the worker's own process id when it runs in a process of its own (the front may kill it when
    it overruns ``execution_timeout_s``), None when it is a thread of the binding process; ``owner_kills``: its
    owner (a cluster backend's pool) kills it instead, and its hello says so. Shared memory unused for
    ``idle_release_s`` is given back.
    """

    def __init__(
        self,
        spec: ModelSpec,
        fn: ModelFunction,
        channel: WorkerChannel,
        arena: Arena,
        pid: int | None = None,
        idle_release_s: float = 10.0,
        owner_kills: bool = False,
    ) -> None:
        self.spec, self.fn, self.channel, self.arena, self.pid = spec, fn, channel, arena, pid
        self.idle_release_s, self.owner_kills = idle_release_s, owner_kills
        self.segments = SegmentMap()
        self.failures = FailureLog(spec.label)
        self._loop: asyncio.AbstractEventLoop | None = None
        # Batches of a concurrent worker cancelled past their execution timeout, by front and batch id.
        self._timed_out: set[tuple[int, int]] = set()
        self._hello: dict[str, Any] = {}

    @property
    def slots(self) -> int:
        """How many batches this worker takes at once: ``concurrency`` for an async function of an ordinary model,
        else one."""
        concurrent = self.spec.config.concurrency > 1 and not self.spec.config.decoupled
        return self.spec.config.concurrency if concurrent and _is_async(self.fn) else 1

    def warm_up(self) -> None:
        """Run the model's warmups (`ModelConfig.warmup`) before the worker says hello: each ``count`` times, as a
        batch of one request of ``batch_size`` rows, through the function as a batch would be (a decoupled one's
        generator run to its end). What it returns is discarded unchecked: a warmup may give only some inputs, and
        the function answer only for those. Raises `StartupError` naming the warmup and what the function
        raised."""
        config = self.spec.config
        rng = np.random.default_rng()
        for warmup in config.warmup:
            for _ in range(warmup.count):
                try:
                    requests = [Request(warmup.arrays(config.batching, rng), {})]
                    if config.decoupled:
                        for _ in self._steps(self.fn(requests)):
                            pass
                    else:
                        self._call(requests)
                except Terminated:
                    raise
                except BaseException as exc:  # SystemExit too: the worker could not start, whatever it was
                    text = client_message(exc)
                    raise StartupError(
                        f"warmup {warmup.name!r} failed: {type(exc).__name__}{': ' if text else ''}{text}"
                    ) from exc

    def serve(self, segment_prefix: str) -> None:
        """Announce the worker to the front, then answer frames until stopped. Closes everything it opened."""
        hello = {"op": "hello", "model": self.spec.name, "version": self.spec.version, "segments": segment_prefix}
        self._hello = {**hello, "pid": self.pid, "slots": self.slots}
        if self.owner_kills:
            self._hello["owner_kills"] = True
        try:
            self.channel.broadcast(self._hello)
            if self.slots > 1:
                self._await(self._serve_concurrently())
                return
            while (frame := self._next_frame()) is not None:
                if frame["op"] == "batch" and self.spec.config.decoupled:
                    self._started(frame)
                    self.stream(frame)
                elif frame["op"] == "batch":
                    frames = self._waiting_beside(frame)
                    for batch in frames:
                        self._started(batch)
                    answers = [self.handle(frame)] if len(frames) == 1 else self.handle_together(frames)
                    for batch, answer in zip(frames, answers, strict=True):
                        self.channel.send(answer, batch["front"])
                elif frame["op"] == "free":
                    self._free(frame)
                elif frame["op"] == "announce":  # a front restarted: it learns of its workers this way
                    self.channel.send(self._hello, frame["front"])
                # "cancel" of a stream that has ended already: nothing left to stop
        except _Stopping:
            pass
        finally:
            self.close()

    def _waiting_beside(self, frame: dict[str, Any]) -> list[dict[str, Any]]:
        """``frame``, and the batches of other fronts already waiting here that fit beside it (``max_batch_size``
        rows in all): each front forms its own batches, and this joins them again into one call, as one front
        would have. The batches that do not fit, and other frames, are kept for later, in order."""
        limit = self.spec.config.max_batch_size
        if self.channel.fronts == 1 or limit <= 0:
            return [frame]
        frames, rows, later = [frame], _frame_rows(frame), []
        while True:
            try:
                waiting = self.channel.receive(0)
            except Empty:
                break
            if waiting is None:  # stopping: answer what is in hand first, then stop at the next receive
                break
            if waiting["op"] == "free":
                self._free(waiting)
                continue
            if waiting["op"] == "batch" and rows + _frame_rows(waiting) <= limit:
                frames.append(waiting)
                rows += _frame_rows(waiting)
            else:  # one that does not fit waits for the next call, ahead of those that come later
                later.append(waiting)
        for waiting in later:
            self.channel.defer(waiting)
        return frames

    def handle_together(self, frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Run several batch frames as one call of the function; an answer (result or error) for each."""
        started = time.perf_counter()
        marks = [time.monotonic_ns()] if any("trace" in frame for frame in frames) else None
        try:
            parts = [self._requests(frame) for frame in frames]
            requests = [request for part in parts for request in part]
            if marks is not None:
                marks.append(time.monotonic_ns())
            responses = self._call(requests)
            if marks is not None:
                marks.append(time.monotonic_ns())
            if not isinstance(responses, (list, tuple)) or len(responses) != len(requests):
                self._collect(responses, requests)  # raises, saying what was wrong
            answers, start = [], 0
            for frame, part in zip(frames, parts, strict=True):
                answers.append(self._answer(frame, part, responses[start : start + len(part)], started))
                start += len(part)
        except Terminated:
            raise
        except BaseException as exc:
            error = _timed(self._error_frame(frames[0]["id"], exc), marks)
            return [{**error, "id": frame["id"]} for frame in frames]
        return answers if marks is None else [_timed(answer, marks) for answer in answers]

    def _started(self, frame: dict[str, Any]) -> None:
        """With several fronts a batch may wait here behind other fronts' batches. Its front hears when it
        starts: its execution timeout counts from then, and it may send its next batch to wait here."""
        if self.channel.fronts > 1:
            self.channel.send({"op": "started", "id": frame["id"]}, frame["front"])

    def _next_frame(self) -> dict[str, Any] | None:
        """The next frame (None: stop); while none comes, idle shared memory is given back once."""
        holding = True
        while True:
            try:
                return self.channel.receive(int(self.idle_release_s * 1000) if holding else None)
            except Empty:
                holding = self.release_idle(time.monotonic())

    def release_idle(self, now: float) -> bool:
        """Give back shared memory unused for ``idle_release_s``, and free heap pages; whether more is held that
        a later call could give back."""
        idle_s = self.idle_release_s
        released = self.arena.release_idle(now, idle_s) + self.segments.release_idle(now, idle_s)
        if released:
            trim_heap()
        return self.arena.segment_count > 1 or len(self.segments) > 0

    def _free(self, frame: dict[str, Any]) -> None:
        for segment, offset, nbytes in frame["blocks"]:
            self.arena.free(Block(segment, offset, nbytes))

    def handle(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Run one batch frame; the answer is a result or an error frame, never an exception."""
        started = time.perf_counter()
        marks = [time.monotonic_ns()] if "trace" in frame else None  # its requests' traces want the times
        try:
            requests = self._requests(frame)
            if marks is not None:
                marks.append(time.monotonic_ns())
            responses = self._call(requests)
            if marks is not None:
                marks.append(time.monotonic_ns())
            answer = self._answer(frame, requests, responses, started)
        except Terminated:
            raise
        except BaseException as exc:  # SystemExit and KeyboardInterrupt too: they end this call, not the worker
            return _timed(self._error_frame(frame["id"], exc), marks)
        return answer if marks is None else _timed(answer, marks)

    def _answer(self, frame: dict[str, Any], requests: list[Request], responses: Any, started: float) -> dict[str, Any]:
        """The result frame of a batch whose function answered ``responses``."""
        outputs = self._collect(responses, requests)
        buffers: list[Any] = []
        front = frame["front"]
        descriptors = {name: self._write(arrays, buffers, front) for name, arrays in outputs.items()}
        compute_us = int((time.perf_counter() - started) * 1e6)
        answer = {"op": "result", "id": frame["id"], "outputs": descriptors, "compute_us": compute_us}
        if buffers:
            answer["buffers"] = buffers
        return answer

    def _write(self, arrays: list[Any], buffers: list[Any], front: int) -> dict[str, Any]:
        """Outputs into this worker's arena, or (a front on another host) into the answer's ``buffers``."""
        if self.channel.inline_fronts[front]:
            return pack_group(arrays, buffers)
        return write_group(self.arena, arrays)

    async def _serve_concurrently(self) -> None:
        """The frame loop of an async function with ``concurrency`` above one: each batch runs as a task on the
        worker's event loop while the next frames are taken; the front sends at most ``slots`` at once."""
        loop = asyncio.get_running_loop()
        sockets = [zmq.asyncio.Socket.shadow(sock.underlying) for sock in self.channel.sockets]
        inline = self.channel.inline_fronts
        stopped = asyncio.Event()
        loop.add_reader(self.channel.stop_fd, stopped.set)
        running: dict[tuple[int, int], asyncio.Task[None]] = {}  # by front and batch id
        stop = asyncio.ensure_future(stopped.wait())
        receiving: dict[asyncio.Future[Any], int] = {
            asyncio.ensure_future(_receive(sock, inline[i])): i for i, sock in enumerate(sockets)
        }
        try:
            while True:
                done, _ = await asyncio.wait(
                    {*receiving, stop}, timeout=self.idle_release_s, return_when="FIRST_COMPLETED"
                )
                if stop in done:
                    return
                if not done:
                    self.release_idle(time.monotonic())
                    continue
                for receive in done:
                    front = receiving.pop(receive)
                    receiving[asyncio.ensure_future(_receive(sockets[front], inline[front]))] = front
                    frame = parse_parts(receive.result()) if inline[front] else decode(receive.result())
                    frame["front"] = front
                    key = (front, frame.get("id", -1))
                    if frame["op"] == "batch":
                        task = loop.create_task(self._run_batch(frame, sockets[front]))
                        running[key] = task
                        task.add_done_callback(partial(_forget, running, key))
                    elif frame["op"] == "free":
                        self._free(frame)
                    elif frame["op"] == "announce":
                        await sockets[front].send(encode(self._hello))
                    elif frame["op"] == "cancel" and key in running:  # it passed its execution timeout
                        self._timed_out.add(key)
                        running[key].cancel()
        finally:
            for receive in receiving:
                receive.cancel()
            loop.remove_reader(self.channel.stop_fd)
            stop.cancel()
            stopping = list(running.values())
            for task in stopping:
                task.cancel()
            await asyncio.gather(*stopping, return_exceptions=True)

    async def _run_batch(self, frame: dict[str, Any], socket: Any) -> None:
        """Run one batch as a task; cancelled (the front's ``cancel``: its execution timeout passed), it answers
        an error so that the front's slot is free again."""
        started = time.perf_counter()
        marks = [time.monotonic_ns()] if "trace" in frame else None
        try:
            requests = self._requests(frame)
            if marks is not None:
                marks.append(time.monotonic_ns())
            responses = self.fn(requests)
            if inspect.isawaitable(responses):
                responses = await responses
            if marks is not None:
                marks.append(time.monotonic_ns())
            answer = self._answer(frame, requests, responses, started)
        except Terminated:
            raise
        except asyncio.CancelledError:
            key = (frame["front"], frame["id"])
            if key not in self._timed_out:  # the worker is stopping
                raise
            self._timed_out.discard(key)
            answer = {"op": "error", "id": frame["id"], "type": "ExecutionTimeoutError", "message": "cancelled"}
        except BaseException as exc:
            answer = self._error_frame(frame["id"], exc)
        await socket.send_multipart(to_parts(answer if marks is None else _timed(answer, marks)), copy=False)

    def _requests(self, frame: dict[str, Any]) -> list[Request]:
        if self.channel.inline_fronts[frame["front"]]:  # the front is on another host: the bytes came in the message
            buffers = frame.pop("buffers", [])
            columns = {name: unpack_group(desc, buffers, writable=True) for name, desc in frame["inputs"].items()}
        else:
            columns = {name: read_group(self.segments, desc) for name, desc in frame["inputs"].items()}
        traces = frame.get("trace")
        return [
            Request({name: arrays[i] for name, arrays in columns.items()}, parameters, traces and traces[i])
            for i, parameters in enumerate(frame["parameters"])
        ]

    def stream(self, frame: dict[str, Any]) -> None:
        """Run one batch of a decoupled model: a ``partial`` frame for each step that answers or ends a
        request, then ``done`` (or ``error``). Between steps it takes the front's frames: ``cancel`` closes a
        request's stream (the client went away), and once every stream is closed the function is stopped."""
        batch_id, front, started = frame["id"], frame["front"], time.perf_counter()
        marks = [time.monotonic_ns()] if "trace" in frame else None
        try:
            requests = self._requests(frame)
            if marks is not None:
                marks.append(time.monotonic_ns())
            open_ = set(range(len(requests)))
            with closing(self._steps(self.fn(requests))) as steps:
                for step in steps:
                    self._send_step(batch_id, front, step, requests, open_)
                    open_ -= self._cancelled(batch_id, front)
                    if not open_:
                        break
        except (_Stopping, Terminated):
            raise
        except BaseException as exc:
            self.channel.send(_timed(self._error_frame(batch_id, exc), marks), front)
            return
        compute_us = int((time.perf_counter() - started) * 1e6)
        done = {"op": "done", "id": batch_id, "compute_us": compute_us}
        self.channel.send(done if marks is None else _timed(done, marks), front)

    def _steps(self, result: Any) -> Generator[Any, None, None]:
        """The steps of a decoupled function's result: a generator's items (async ones driven on the worker's
        loop), or the one list a plain function returns. Closing it closes the function's generator."""
        if inspect.isawaitable(result):
            result = self._await(result)
        if inspect.isgenerator(result):
            with closing(result):
                yield from result
        elif inspect.isasyncgen(result):
            try:
                while True:
                    try:
                        yield self._await(anext(result))
                    except StopAsyncIteration:
                        return
            finally:
                self._await(result.aclose())
        else:
            yield result

    def _send_step(self, batch_id: int, front: int, step: Any, requests: list[Request], open_: set[int]) -> None:
        if not isinstance(step, (list, tuple)) or len(step) != len(requests):
            got = f"{len(step)} entries" if isinstance(step, (list, tuple)) else type(step).__name__
            raise OutputValidationError(
                f"{self.spec.label}: each step of a streaming function must be a list of {len(requests)} entries "
                f"(one per request: a dict of outputs, None or STREAM_END), got {got}"
            )
        index = [i for i in sorted(open_) if step[i] is not None and step[i] is not STREAM_END]
        ended = [i for i in sorted(open_) if step[i] is STREAM_END]
        if not index and not ended:
            return
        outputs = self._collect([step[i] for i in index], [requests[i] for i in index]) if index else {}
        buffers: list[Any] = []
        descriptors = {name: self._write(arrays, buffers, front) for name, arrays in outputs.items()}
        partial_ = {"op": "partial", "id": batch_id, "index": index, "ended": ended, "outputs": descriptors}
        if buffers:
            partial_["buffers"] = buffers
        self.channel.send(partial_, front)
        open_.difference_update(ended)

    def _cancelled(self, batch_id: int, front: int) -> set[int]:
        """The requests of this batch whose clients went away, from the frames that arrived during the step.
        Frames for later (another front's batch, and what comes with it) are put back, in order."""
        cancelled: set[int] = set()
        later: list[dict[str, Any]] = []
        while True:
            try:
                frame = self.channel.receive(0)
            except Empty:
                for frame in later:
                    self.channel.defer(frame)
                return cancelled
            if frame is None:
                raise _Stopping
            if frame["op"] == "cancel" and frame["id"] == batch_id and frame["front"] == front:
                cancelled.add(frame["index"])
            elif frame["op"] == "free":
                self._free(frame)
            else:
                later.append(frame)

    def _await(self, awaitable: Any) -> Any:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(_awaited(awaitable))

    def _call(self, requests: list[Request]) -> Any:
        result = self.fn(requests)
        if inspect.isawaitable(result):
            result = self._await(result)
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
            declared = [t.name for t in self.spec.outputs]
            raise OutputValidationError(
                f"{label}: missing from the function's response, which has {sorted(response)}; the model declares "
                f"outputs {declared} (bind(outputs=...)), and the function must return each by that name"
            )
        value = response[tensor.name]
        if is_torch_tensor(value):
            try:
                array: Any = from_torch(value, tensor.dtype, self.spec.strict)
            except TypeError as exc:
                raise OutputValidationError(f"{label}: expected {tensor.datatype}, {exc}") from None
        else:
            array = _conform_dtype(label, tensor, np.asarray(value), self.spec.strict)
        if self.spec.strict:
            _check_shape(label, tensor, array, _rows(request) if self.spec.config.batching else None)
        return array

    def _error_frame(self, batch_id: int, exc: BaseException) -> dict[str, Any]:
        label, text = self.spec.label, client_message(exc)
        if isinstance(exc, InferenceError):
            kind, message = type(exc).__name__, text if label in text else f"{label}: {text}"
        else:
            kind, message = ModelExecutionError.__name__, f"{label}: {type(exc).__name__}{': ' if text else ''}{text}"
        self.failures.record(exc, time.monotonic(), _mistake_hint(self.fn, exc))
        return {"op": "error", "id": batch_id, "type": kind, "message": message, "traceback": user_traceback(exc)}

    def close(self) -> None:
        self.channel.close()
        self.segments.close()
        self.arena.close()
        if self._loop is not None:
            self._loop.close()


class _Stopping(Exception):
    """The worker was asked to stop while a stream ran."""


class FailureLog:
    """Logs a model's failures without flooding the log (or a notebook's cells).

    The first failure is logged at ERROR with the traceback of the user's code (pybind_serve's own frames
    left out: a failure of ours, such as an output the function did not return, is its message alone; the whole
    traceback goes to DEBUG) and, for a common mistake, what to do (``hint``); later ones at most once per
    ``interval_s``, saying how many failed in between; the rest at DEBUG. A failure the client caused (an
    `InferenceError` with a 4xx status, e.g. `InvalidInputError` raised by the function) is the client's to
    see, and only ever logged at DEBUG.
    """

    def __init__(self, label: str, interval_s: float = 30.0) -> None:
        self.label, self.interval_s = label, interval_s
        self._last_logged: float | None = None
        self._suppressed = 0

    def record(self, exc: BaseException, now: float, hint: str = "") -> None:
        """Log ``exc`` (the exception being handled) as one failure of the model, at ``now`` (monotonic), with
        ``hint`` (what to do about it) after the traceback."""
        if isinstance(exc, InferenceError) and exc.http_status < 500:
            log.debug("%s refused a request: %s", self.label, exc)
            return
        if self._last_logged is not None and now - self._last_logged < self.interval_s:
            self._suppressed += 1
            log.debug("%s failed: %s: %s", self.label, type(exc).__name__, exc)
            return
        since = f" ({self._suppressed} more failures since the last report)" if self._suppressed else ""
        quiet = f"; further failures in the next {self.interval_s:g} s are logged at DEBUG"
        log.error("%s failed%s%s:\n%s%s", self.label, since, quiet, user_traceback(exc), f"\n{hint}" if hint else "")
        log.debug("%s failed; the whole traceback:", self.label, exc_info=exc)
        self._last_logged, self._suppressed = now, 0


def user_traceback(exc: BaseException) -> str:
    """The traceback of ``exc`` (and of the exceptions it chains) without pybind_serve's own frames: the user's
    code and the exception, or the exception alone when it came from our frames only (a decorator's or the
    worker's check of what the function returned). A long message is cut (`client_message`)."""
    error = traceback.TracebackException.from_exception(exc)
    seen: set[int] = set()
    pending = [error]
    while pending:  # the exception and its causes and contexts: each keeps the user's frames only
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        theirs = [frame for frame in current.stack if not frame.filename.startswith(_PACKAGE_DIR)]
        current.stack = traceback.StackSummary.from_list(theirs)
        pending += [chained for chained in (current.__cause__, current.__context__) if chained is not None]
    return client_message("".join(error.format()).rstrip("\n"), 4 * MAX_MESSAGE_CHARS)


_UNDECORATED = (
    "the function is called with one argument, the batch's list of `Request` (each a mapping of input name to "
    "array), and returns one dict of outputs per request; to take the inputs by name as arrays, decorate it "
    "with @batch (the whole batch at once) or @sample (one request at a time)"
)


def _mistake_hint(fn: Any, exc: BaseException) -> str:
    """What to do about a failure that is a common mistake, or "": a function written for ``@batch`` bound without
    it (it could not take the list of requests, or it treated that list as an array)."""
    if not isinstance(exc, (TypeError, AttributeError)) or _decorated(fn):
        return ""
    frames = traceback.extract_tb(exc.__traceback__)
    if all(frame.filename.startswith(_PACKAGE_DIR) for frame in frames):  # the call itself failed...
        try:
            inspect.signature(fn).bind([])
        except TypeError:  # ...because the function cannot take one positional argument
            return f"Hint: {_UNDECORATED}."
        except ValueError:  # no signature to read
            return ""
        return ""
    if re.search(r"\blist\b", str(exc)):  # "'list' object has no attribute 'shape'", "list indices must be..."
        return f"Hint: if the function expected arrays, it got a list: {_UNDECORATED}."
    return ""


def _decorated(fn: Any) -> bool:
    """Whether ``fn`` (or the ``__call__`` of a bound class's instance) is wrapped by a decorator (ours are
    wrapt's): then it does not see the list of requests itself."""
    wrappers = (wrapt.FunctionWrapper, wrapt.BoundFunctionWrapper)
    return isinstance(fn, wrappers) or isinstance(inspect.getattr_static(fn, "__call__", None), wrappers)


def _timed(answer: dict[str, Any], marks: list[int] | None) -> dict[str, Any]:
    """A traced batch's answer with its times (``marks`` and now); an untraced one's as it is."""
    if marks is not None:
        answer["times"] = [*marks, time.monotonic_ns()]
    return answer


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _frame_rows(frame: dict[str, Any]) -> int:
    """The rows of a batch frame: the sum of its requests' first dimensions."""
    first = next(iter(frame["inputs"].values()))
    return sum(shape[0] if shape else 1 for shape in first["shapes"])


def _receive(sock: Any, inline: bool) -> Any:
    """A socket's next message: its parts (fronts on another host), else its one frame."""
    return sock.recv_multipart(copy=False) if inline else sock.recv()


def _forget(running: dict[tuple[int, int], Any], key: tuple[int, int], _: Any) -> None:
    running.pop(key, None)


def _is_async(fn: Any) -> bool:
    """Whether calling ``fn`` gives an awaitable: an async function (decorated or not), or an object whose
    ``__call__`` is one."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        inspect.getattr_static(type(fn), "__call__", None)
    )


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
