"""Sends batches to workers and turns their answers into responses.

Each registered worker gets one `_drive` task per batch it takes at once (its ``slots``: one, or its model's
``concurrency`` for an async function): take the next batch from its model's scheduler, write the
batch's input tensors once into the front's arena, send a descriptor, await the answer, hand each request
its outputs (still views into the worker's shared memory) to encode, then tell the worker to free them.
One batch runs per worker at a time, as one batch runs per model instance in Triton. When an answer comes
back, the next batch, if one is ready at that instant (`Scheduler.take_ready`: the batch `next_batch` would
give), is sent before the answer is handed out, so the worker computes while the front encodes responses.

A decoupled (streaming) model answers a batch with any number of partial answers before its last: each
partial response is encoded and handed to its request's `Job.emit`, and a request's future resolves (to
None) when its stream ends. A request whose future is cancelled meanwhile (its client went away) is
cancelled in the worker too, which stops the function once no request of the batch is left.

With ``execution_timeout_s``, a batch whose answer (for a decoupled model: whose next answer) does not come in
time fails with `ExecutionTimeoutError`. A worker process is then killed (its supervisor starts a new one); a
worker its owner kills (a cluster backend's actor, whose hello says ``owner_kills``) is forgotten at once and
listed in `Dispatcher.overran`, which the owner reads with the queues and acts on (it kills the actor, tells every
front it is gone, and starts another); a worker thread of the binding process cannot be killed, so it stops
counting as ready until its late answer comes.

While traced requests are in flight (`trace_spans.Tracer.active`), a batch with any of them carries each request's
``traceparent`` (``trace``: None for those not traced); the worker then answers with its times (``times``), which
go to each traced request's trace (`trace_export.RequestTrace`), as does when its batch was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import (
    ExecutionTimeoutError,
    InferenceError,
    InternalServerError,
    UnavailableError,
    WorkerDiedError,
    from_wire,
)
from ..metrics import Metrics, ModelStats
from ..protocol.messages import InferRequest
from ..scheduler import Pending
from ..transport.frames import block_of, read_group, write_group
from ..transport.inline import pack_group, shm_blocks, unpack_group
from ..transport.shm import Arena, SegmentMap
from .job import Job
from .models import ModelEntry

if TYPE_CHECKING:
    from .trace_spans import Tracer

__all__ = ["Dispatcher"]

log = logging.getLogger("pybind_serve.front")

Send = Callable[[bytes, dict[str, Any]], None]
_TIMED_OUT: dict[str, Any] = {"op": "timed out"}  # what a flight's answers get when execution_timeout_s passes
_AVERAGING = 0.2  # weight of the latest batch in a worker's average compute time
# Several fronts: a front forms its next batch at 80 % of the worker's recent batch time, less 1 ms.
_FORM_AHEAD, _FORM_MARGIN_S = 0.8, 0.001


@dataclass(eq=False, slots=True)
class _Flight:
    """A batch sent to a worker: its requests, the queue its answers arrive on, and its input blocks."""

    batch_id: int
    live: list[Pending[Job]]
    answers: asyncio.Queue[dict[str, Any]]
    stats: ModelStats
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    input_us: int = 0  # how long writing its inputs took
    traced: bool = False  # some of its requests are traced: the worker reports its times


@dataclass(eq=False)
class _Worker:
    identity: bytes
    entry: ModelEntry
    segments: str
    pid: int | None  # the worker's own process, which may be killed; None: a thread of the binding process
    slots: int = 1  # batches it takes at once (several: an async function, whose batches can be cancelled)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)  # one `_drive` per slot
    # Its tasks waiting for a batch to send, and the batch being formed to wait at it (`_send_next_until_answered`):
    # cancelled when it leaves, so that no batch is formed for it any more.
    waiting: set[asyncio.Task[Any]] = field(default_factory=set)
    inflight: set[int] = field(default_factory=set)  # its batches sent and not yet answered
    compute_s: float = 0.0  # how long its batches took lately (a moving average of the answers' compute_us)
    inline: bool = False  # on another host: tensor bytes travel in the messages (`transport.inline`), not in shm
    owner_kills: bool = False  # a cluster backend's worker: killed by its owner (see `Dispatcher.overran`)


class Dispatcher:
    """The workers known to the front and the batches in flight to them."""

    def __init__(self, arena: Arena, send: Send, metrics: Metrics, tracer: Tracer | None = None) -> None:
        self._arena, self._send, self._metrics = arena, send, metrics
        self._tracer = tracer
        self._segments = SegmentMap()
        self._workers: dict[bytes, _Worker] = {}
        self._inflight: dict[int, _Flight] = {}  # by batch id
        self._ids = itertools.count(1)
        self._sent = 0
        # Workers that passed execution_timeout_s and that their owner is to kill (`owner_kills`); forgotten here
        # already, each stays listed until the owner says it is gone (``worker_gone``).
        self.overran: set[bytes] = set()

    @property
    def busy(self) -> bool:
        """Whether any batch is out to a worker."""
        return bool(self._inflight)

    def known(self) -> set[bytes]:
        """The identities of the workers registered here."""
        return set(self._workers)

    @property
    def batches_sent(self) -> int:
        return self._sent

    def register(
        self,
        identity: bytes,
        entry: ModelEntry,
        segments: str,
        pid: int | None = None,
        slots: int = 1,
        inline: bool = False,
        owner_kills: bool = False,
    ) -> None:
        """A worker said hello: start feeding it batches of its model, ``slots`` at once (``inline``: it is on
        another host, and gets the tensor bytes in the messages; ``owner_kills``: its owner kills it when it
        overruns ``execution_timeout_s``)."""
        self.remove(identity, "was replaced by a new worker of the same identity")
        worker = _Worker(identity, entry, segments, pid, max(slots, 1), inline=inline, owner_kills=owner_kills)
        loop = asyncio.get_running_loop()
        worker.tasks = [loop.create_task(self._drive(worker)) for _ in range(worker.slots)]
        self._workers[identity] = worker
        entry.add_worker(identity.decode())

    def remove(self, identity: bytes, why: str, retry: bool = False) -> None:
        """Forget a worker (it died, or its model was unloaded); its batch in flight fails, unless ``retry`` (it was
        lost through no fault of its batch: its node died) and the model has other workers here: then the batch's
        requests go back to the head of the queue, once each, for another worker (not a decoupled model's, which
        may have streamed responses already)."""
        worker = self._workers.pop(identity, None)
        if worker is None:
            return
        worker.entry.remove_worker(identity.decode(), f"its worker {why}")
        retry = retry and bool(worker.entry.workers) and not worker.entry.spec.config.decoupled
        for batch_id in worker.inflight:
            flight = self._inflight.get(batch_id)
            if flight is not None:
                message = f"{worker.entry.spec.label}: the worker {why}; the batch was lost"
                lost = {"op": "error", "type": WorkerDiedError.__name__, "message": message, "retry": retry}
                flight.answers.put_nowait(lost)
        for task in worker.waiting:  # those with a batch in flight end once it has landed
            task.cancel()
        self._segments.forget(worker.segments)

    async def drain(self, identity: bytes, timeout_s: float) -> bool:
        """Take a worker out of service gently (its model scales down): no new batch goes to it, and its batches in
        flight are answered (those still out after ``timeout_s`` fail as if it died); then it is forgotten. False,
        and nothing done, when it is its model's last worker here."""
        worker = self._workers.get(identity)
        if worker is None:
            return True
        if len(worker.entry.workers) <= 1:
            return False
        del self._workers[identity]  # from now on its tasks take no batch, and end once theirs have landed
        worker.entry.remove_worker(identity.decode(), "its worker was drained")
        for task in worker.waiting:
            task.cancel()
        if worker.tasks:
            await asyncio.wait(worker.tasks, timeout=timeout_s)
        self._workers[identity] = worker
        self.remove(identity, f"was drained and did not finish its batches within {timeout_s:g} s")
        return True

    def busy_workers(self, entry: ModelEntry) -> int:
        """How many of a model's workers have a batch in flight."""
        return sum(1 for w in self._workers.values() if w.entry is entry and w.inflight)

    def fail_all(self, error: UnavailableError) -> None:
        """Answer every request of every batch out to a worker with ``error`` (the server stops before they
        were answered); the batches' late answers are dropped."""
        for flight in self._inflight.values():
            _fail(flight.live, error)

    def release_idle(self, now: float, idle_s: float) -> int:
        """Give back the shared memory (the front's arena, and the workers' segments it maps) that no batch used
        in the ``idle_s`` before ``now``; how many segments were let go."""
        return len(self._arena.release_idle(now, idle_s) + self._segments.release_idle(now, idle_s))

    async def retire(self, entry: ModelEntry, timeout_s: float) -> None:
        """Let the workers of an unloaded model finish their batch in flight, then forget them."""
        workers = [w for w in self._workers.values() if w.entry is entry]
        tasks = [task for w in workers for task in w.tasks]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)
        for worker in workers:
            self.remove(worker.identity, "was unbound")

    def answer(self, identity: bytes, frame: dict[str, Any]) -> None:
        """A worker's started, result, partial, done or error frame arrived. One for a batch this front does not
        know (sent by the front this one replaced, which died) only has its outputs freed."""
        flight = self._inflight.get(frame["id"])
        if flight is not None:
            flight.answers.put_nowait(frame)
        elif blocks := shm_blocks(frame.get("outputs") or {}):
            self._send(identity, {"op": "free", "blocks": blocks})

    async def _drive(self, worker: _Worker) -> None:
        scheduler = worker.entry.scheduler
        flight: _Flight | None = None
        while True:
            if flight is not None:  # landed even after the worker is gone: `remove` failed it, and its
                flight = await self._land(worker, flight)  # requests must hear so
                continue
            if self._workers.get(worker.identity) is not worker:
                return
            task = asyncio.current_task()
            assert task is not None
            worker.waiting.add(task)
            try:
                batch = await scheduler.next_batch()
            except InferenceError:
                return  # the scheduler was closed: the model is gone
            finally:
                worker.waiting.discard(task)
            flight = self._launch(worker, batch)

    def _launch(self, worker: _Worker, batch: list[Pending[Job]]) -> _Flight | None:
        """Write a batch's inputs into the arena and send it to the worker; None if nothing was sent."""
        live = [p for p in batch if not p.future.done()]
        if not live:
            return None
        stats = self._metrics.model(worker.entry.spec.name, worker.entry.spec.version)
        started = time.monotonic()
        for pending in live:
            stats.queue_us += int((started - pending.enqueued) * 1e6)
        flight = _Flight(next(self._ids), live, asyncio.Queue(), stats)
        self._inflight[flight.batch_id] = flight
        self._sent += 1
        worker.inflight.add(flight.batch_id)
        try:
            buffers: list[Any] | None = [] if worker.inline else None
            flight.inputs = self._write_inputs(live, buffers)
            flight.input_us = int((time.monotonic() - started) * 1e6)
            stats.input_us += flight.input_us * len(live)
            parameters = [p.payload.request.parameters for p in live]
            frame = {"op": "batch", "id": flight.batch_id, "inputs": flight.inputs, "parameters": parameters}
            if buffers is not None:  # no shared memory to free once it is answered
                frame["buffers"], flight.inputs = buffers, {}
            if self._tracer is not None and self._tracer.active:
                flight.traced = _traced(frame, live, started)
            self._send(worker.identity, frame)
        except Exception as exc:  # e.g. /dev/shm full: fail this batch, keep serving
            self._failed(worker, flight, exc)
            return None
        return flight

    async def _land(self, worker: _Worker, flight: _Flight) -> _Flight | None:
        """Await a batch's answer and hand it out; the next batch, if it was sent meanwhile."""
        following = None
        try:
            if worker.entry.spec.config.decoupled:
                await self._stream(worker, flight)
            else:
                reply = await self._next_answer(worker, flight)
                while reply["op"] == "started":  # several fronts: the worker began ours; the next may wait
                    if following is None:  # there meanwhile, to be joined with other fronts' batches
                        following, reply = await self._send_next_until_answered(worker, flight)
                    else:
                        reply = await self._next_answer(worker, flight)
                if reply is not _TIMED_OUT:
                    # the worker is free: keep it busy while we answer
                    following = following or self._launch_ready(worker)
                    self._deliver(worker, flight, reply)
        except Exception as exc:
            self._failed(worker, flight, exc)
        except BaseException:  # cancelled: forget the batch, free its inputs
            self._done(worker, flight)
            raise
        else:
            self._done(worker, flight)
        return following

    async def _send_next_until_answered(
        self, worker: _Worker, flight: _Flight
    ) -> tuple[_Flight | None, dict[str, Any]]:
        """While the worker runs ``flight`` (it said "started"), send the model's next batch as soon as one forms,
        to wait at the worker; the batch sent (None if the answer came first) and the answer."""
        answer = asyncio.ensure_future(self._next_answer(worker, flight))
        # Requests keep coming while the worker runs ours: the next batch is formed just before it should end
        # (from how long batches took lately), so that it holds as many of them as it can.
        ahead_s = worker.compute_s * _FORM_AHEAD - _FORM_MARGIN_S
        if ahead_s > 0:
            try:
                await asyncio.wait({answer}, timeout=ahead_s)
            except BaseException:
                answer.cancel()
                raise
            if answer.done():
                return None, answer.result()
        following = self._launch_ready(worker)
        if following is not None:
            return following, await answer
        if self._workers.get(worker.identity) is not worker:  # drained or gone meanwhile: no batch for it
            return None, await answer
        forming = asyncio.ensure_future(worker.entry.scheduler.next_batch())
        worker.waiting.add(forming)  # `drain` and `remove` cancel it
        try:
            await asyncio.wait({answer, forming}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            answer.cancel()
            forming.cancel()
            raise
        finally:
            worker.waiting.discard(forming)
        if forming.done() and not forming.cancelled() and forming.exception() is None:
            if self._workers.get(worker.identity) is worker:
                following = self._launch(worker, forming.result())
            else:  # it left after the batch formed, before this task woke: the batch goes to another worker
                self._hand_back(worker.entry, forming.result())
        else:
            forming.cancel()
            with contextlib.suppress(asyncio.CancelledError, InferenceError):
                await forming
        return following, await answer

    @staticmethod
    def _hand_back(entry: ModelEntry, batch: list[Pending[Job]]) -> None:
        """A batch formed for a worker that left before it was sent: back to the head of the queue, for another
        worker (it never ran: not a retry); failed as the queue was if the model has no worker left here."""
        if entry.workers:
            entry.scheduler.requeue(batch, retried=False)
        else:
            _fail(batch, entry.not_ready())

    def _launch_ready(self, worker: _Worker) -> _Flight | None:
        if self._workers.get(worker.identity) is not worker:
            return None
        batch = worker.entry.scheduler.take_ready()
        return self._launch(worker, batch) if batch else None

    def _failed(self, worker: _Worker, flight: _Flight, exc: Exception) -> None:
        if isinstance(exc, InferenceError):  # e.g. SharedMemoryFullError: it says what happened and what to do
            log.warning("%s: %s", worker.entry.spec.label, exc)
            _fail(flight.live, type(exc)(f"{worker.entry.spec.label}: {exc}"))
        else:
            log.exception("sending a batch of %s failed", worker.entry.spec.label, exc_info=exc)
            _fail(flight.live, InternalServerError(f"{worker.entry.spec.label}: sending the batch failed: {exc!r}"))
        self._done(worker, flight)

    def _done(self, worker: _Worker, flight: _Flight) -> None:
        self._inflight.pop(flight.batch_id, None)
        worker.inflight.discard(flight.batch_id)
        for desc in flight.inputs.values():
            self._arena.free(block_of(desc))
        flight.inputs = {}

    def _write_inputs(self, live: list[Pending[Job]], buffers: list[Any] | None) -> dict[str, dict[str, Any]]:
        """The batch's input tensors written into the arena, or (``buffers`` given) appended to them."""
        first: InferRequest = live[0].payload.request
        if buffers is not None:
            return {name: pack_group([p.payload.request.inputs[name] for p in live], buffers) for name in first.inputs}
        return {name: write_group(self._arena, [p.payload.request.inputs[name] for p in live]) for name in first.inputs}

    def _deliver(self, worker: _Worker, flight: _Flight, reply: dict[str, Any]) -> None:
        live, stats = flight.live, flight.stats
        if flight.traced:
            _computed(live, reply)
        if reply["op"] == "error":
            log.debug("%s", reply.get("traceback", ""))
            if reply.get("retry"):  # its worker was lost with its node: another runs what was not retried yet
                again, live = [p for p in live if not p.retries], [p for p in live if p.retries]
                worker.entry.scheduler.requeue(again)
            _fail(live, from_wire(reply["type"], reply["message"]))
            return
        rows, compute_us = sum(p.rows for p in live), reply["compute_us"]
        stats.batch(rows)  # as Triton: executions that failed are not inferences
        stats.infer_us += compute_us * len(live)
        worker.compute_s += (compute_us / 1e6 - worker.compute_s) * _AVERAGING
        started = time.monotonic()
        self._hand_out(worker, reply["outputs"], live, _respond, reply.get("buffers"))
        output_us = int((time.monotonic() - started) * 1e6)
        stats.output_us += output_us * len(live)
        stats.executed(rows, flight.input_us, compute_us, output_us)

    def _next_answer(self, worker: _Worker, flight: _Flight) -> Awaitable[dict[str, Any]]:
        """The worker's next answer to a batch, or `_TIMED_OUT` once ``execution_timeout_s`` passed first (then
        the batch's requests have failed, and the worker was dealt with: see `_overran`)."""
        timeout_s = worker.entry.spec.config.execution_timeout_s
        if timeout_s is None:
            return flight.answers.get()  # the hot path: no coroutine of our own around it
        return self._answer_in_time(worker, flight, timeout_s)

    async def _answer_in_time(self, worker: _Worker, flight: _Flight, timeout_s: float) -> dict[str, Any]:
        # With several fronts, a worker says when it starts a batch (which may have waited behind another
        # front's): that "started" is an answer too, so the next one's time limit counts from then.
        timer = asyncio.get_running_loop().call_later(timeout_s, _time_out, flight.answers)
        try:
            reply = await flight.answers.get()
        finally:
            timer.cancel()
        if reply is _TIMED_OUT:
            await self._overran(worker, flight, timeout_s)
        return reply

    async def _overran(self, worker: _Worker, flight: _Flight, timeout_s: float) -> None:
        """A batch passed ``execution_timeout_s``: fail its requests; kill a worker process (its supervisor
        starts another), forget a worker its owner kills and list it in `overran` for the owner, or, for a worker
        thread, take it out of the ready ones until its late answer comes."""
        label, limit = worker.entry.spec.label, f"execution_timeout_s={timeout_s:g} s"
        error = f"{label}: the function did not answer within {limit}"
        if worker.slots > 1:  # an async function's task: cancelled, while the worker's other batches go on
            _fail(flight.live, ExecutionTimeoutError(f"{error}; the batch was cancelled"))
            self._send(worker.identity, {"op": "cancel", "id": flight.batch_id})
            self._release(worker, (await flight.answers.get()).get("outputs", {}))
            return
        if worker.pid is not None:
            _fail(flight.live, ExecutionTimeoutError(f"{error}; its worker process was killed and is replaced"))
            log.error("%s; killing its worker process (pid %d)", error, worker.pid)
            if self._workers.get(worker.identity) is worker:
                self.remove(worker.identity, f"process (pid {worker.pid}) was killed: it passed {limit}")
                _kill(worker.pid)
            return
        if worker.owner_kills:
            _fail(flight.live, ExecutionTimeoutError(f"{error}; its instance was killed and is replaced"))
            log.error("%s; its owner kills worker %s and starts another", error, worker.identity.decode())
            if self._workers.get(worker.identity) is worker:
                self.remove(worker.identity, f"was killed: it passed {limit}")
                self.overran.add(worker.identity)
            return
        _fail(flight.live, ExecutionTimeoutError(f"{error}; the model is not ready until the function returns"))
        log.error("%s; it runs in the binding process, which cannot stop it: not ready until it returns", error)
        identity = worker.identity.decode()
        worker.entry.remove_worker(identity, f"its function is still running a batch that passed {limit}")
        if worker.entry.spec.config.decoupled:  # its function is closed at its next step
            for index in range(len(flight.live)):
                self._cancel_in_worker(worker, flight.batch_id, index)
        while (late := await flight.answers.get())["op"] in ("partial", "started"):
            self._release(worker, late.get("outputs", {}))
        self._release(worker, late.get("outputs", {}))
        if self._workers.get(worker.identity) is worker:
            log.warning("%s: the function returned after overrunning execution_timeout_s; ready again", label)
            worker.entry.add_worker(identity)

    def _release(self, worker: _Worker, descriptors: dict[str, dict[str, Any]]) -> None:
        """Let the worker reuse the blocks of outputs that are handed out, or that nobody waits for any more."""
        blocks = shm_blocks(descriptors)
        if blocks and self._workers.get(worker.identity) is worker:
            self._send(worker.identity, {"op": "free", "blocks": blocks})

    async def _stream(self, worker: _Worker, flight: _Flight) -> None:
        """Hand a decoupled model's partial answers to their requests until the batch is done or failed."""
        live = flight.live
        for index, pending in enumerate(live):
            pending.future.add_done_callback(partial(self._cancel_in_worker, worker, flight.batch_id, index))
        while (reply := await self._next_answer(worker, flight))["op"] in ("partial", "started"):
            if reply["op"] == "partial":
                self._hand_out(worker, reply["outputs"], [live[i] for i in reply["index"]], _emit, reply.get("buffers"))
                _end(live[i] for i in reply["ended"])
        if reply is _TIMED_OUT:
            return
        if reply["op"] == "error":
            self._deliver(worker, flight, reply)
            return
        if flight.traced:
            _computed(live, reply)
        rows = sum(p.rows for p in live)
        flight.stats.batch(rows)
        flight.stats.infer_us += reply["compute_us"] * len(live)
        flight.stats.executed(rows, flight.input_us, reply["compute_us"], 0)  # its outputs went out as they came
        _end(live)

    def _cancel_in_worker(
        self, worker: _Worker, batch_id: int, index: int, future: asyncio.Future[Any] | None = None
    ) -> None:
        """Tell the worker that a request of a streaming batch needs no more responses (its client went away,
        or ``future`` is None: the batch overran its execution timeout)."""
        wanted = future is not None and not future.cancelled()
        if not wanted and batch_id in worker.inflight and self._workers.get(worker.identity) is worker:
            self._send(worker.identity, {"op": "cancel", "id": batch_id, "index": index})

    def _hand_out(
        self,
        worker: _Worker,
        descriptors: dict[str, dict[str, Any]],
        targets: list[Pending[Job]],
        hand: Callable[[Pending[Job], dict[str, np.ndarray]], None],
        buffers: list[Any] | None = None,
    ) -> None:
        """Give each target its row of the outputs (views into the worker's memory, or into the answer's
        ``buffers`` from a worker on another host), then free that memory."""
        try:
            if buffers is None:
                columns = {name: read_group(self._segments, desc) for name, desc in descriptors.items()}
            else:
                columns = {name: unpack_group(desc, buffers) for name, desc in descriptors.items()}
            for i, pending in enumerate(targets):
                if not pending.future.done():
                    hand(pending, {name: arrays[i] for name, arrays in columns.items()})
        finally:
            # At once: deferring this past the responses (call_soon) measured slower, c=8 2,200-2,600 against
            # 3,000-3,150 req/s, as the worker then gets its next batch before the blocks to reuse.
            self._release(worker, descriptors)

    def close(self) -> None:
        for identity in list(self._workers):
            self.remove(identity, "was stopped with the server")
        self._segments.close()


def _respond(pending: Pending[Job], outputs: dict[str, np.ndarray]) -> None:
    """The request's one response."""
    _encoded(pending, outputs, pending.future.set_result)


def _emit(pending: Pending[Job], outputs: dict[str, np.ndarray]) -> None:
    """One more response of a decoupled model's stream for the request."""
    emit = pending.payload.emit
    assert emit is not None  # `inference.stream` queues every request of a decoupled model with one
    _encoded(pending, outputs, emit)


def _encoded(pending: Pending[Job], outputs: dict[str, np.ndarray], give: Callable[[Any], None]) -> None:
    try:
        give(pending.payload.respond(outputs))
    except InferenceError as exc:
        pending.future.set_exception(exc)
    except Exception as exc:  # a bug of ours while encoding: answer 500, keep serving
        log.exception("encoding the response failed")
        pending.future.set_exception(InternalServerError(f"encoding the response failed: {exc!r}"))


def _end(streams: Iterable[Pending[Job]]) -> None:
    """These requests' streams are over (a stream that failed or was cancelled stays so)."""
    for pending in streams:
        if not pending.future.done():
            pending.future.set_result(None)


def _traced(frame: dict[str, Any], live: list[Pending[Job]], started: float) -> bool:
    """Give a batch frame the traceparent of each traced request (None for the others); whether it has any."""
    traces = [pending.payload.trace for pending in live]
    if all(trace is None for trace in traces):
        return False
    rows = sum(pending.rows for pending in live)
    frame["trace"] = [trace.dispatched(started, rows, len(live)) if trace is not None else None for trace in traces]
    return True


def _computed(live: list[Pending[Job]], reply: dict[str, Any]) -> None:
    """Hand the worker's times for a batch to its traced requests."""
    times = reply.get("times")
    for pending in live:
        if pending.payload.trace is not None:
            pending.payload.trace.computed(times)


def _time_out(answers: asyncio.Queue[dict[str, Any]]) -> None:
    """The execution timeout passed: unless an answer came meanwhile (and waits to be taken), the next is late."""
    if answers.empty():
        answers.put_nowait(_TIMED_OUT)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # it died by itself meanwhile
        os.kill(pid, signal.SIGKILL)


def _fail(live: list[Pending[Job]], error: InferenceError) -> None:
    for pending in live:
        if not pending.future.done():
            pending.future.set_exception(error)
