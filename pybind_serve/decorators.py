"""Decorators that adapt a bound function's calling convention; pure, and testable without a server.

An undecorated bound function takes ``list[Request]`` and returns one output dict per request, in order.
The decorators come in two levels:

- **request level** (`batch`, `sample`, `fill_optionals`, `group_by_keys`) take that list of requests;
  `batch` and `sample` turn it into calls of ``fn(**inputs) -> dict``.
- **batch level** (`group_by_values`, `pad_batch`, `first_value`) go below ``@batch``: they take and
  give ``fn(**inputs) -> dict`` and change what the inner function sees.

Each decorator keeps the kind of the function it wraps: plain, generator (streaming: one result per
step), ``async def``, or async generator. Where a decorator calls the function several times (once per
request, key set or value group) the calls run one after another, in order (concurrency is the inner
function's choice); for streams their steps are zipped, so every sub-stream must yield equally often.

>>> import numpy as np
>>> from pybind_serve.request import Request
>>> @batch
... @first_value("scale")
... def multiply(x, scale):
...     return {"y": x * scale}
>>> a = Request({"x": np.ones((1, 2)), "scale": np.full((1, 1), 3.0)})
>>> b = Request({"x": np.zeros((2, 2)), "scale": np.full((2, 1), 3.0)})
>>> [out["y"].tolist() for out in multiply([a, b])]
[[[3.0, 3.0]], [[0.0, 0.0], [0.0, 0.0]]]
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Generator, Iterator, Mapping, Sequence
from contextlib import aclosing, closing
from dataclasses import dataclass
from functools import partial
from typing import Any, ParamSpec, TypeVar, overload

import numpy as np
import wrapt

from .context import worker_context
from .errors import ConfigurationError, DecoratorUsageError
from .request import STREAM_END, Request
from .torch_outputs import is_torch_tensor

__all__ = [
    "ConstantPadder",
    "batch",
    "fill_optionals",
    "first_value",
    "group_by_keys",
    "group_by_values",
    "pad_batch",
    "sample",
]

P = ParamSpec("P")
R = TypeVar("R")
Outputs = Mapping[str, Any]  # what a batch- or sample-level function returns: output name -> array-like
Responses = list[dict[str, np.ndarray]]  # one output dict per request
Requests = Sequence[Mapping[str, np.ndarray]]
PadFn = Callable[[list[np.ndarray]], Sequence[np.ndarray]]
_Call = tuple[tuple[Any, ...], dict[str, Any]]
_REQUEST_LEVEL = "request-level decorators (@batch, @sample, @fill_optionals, @group_by_keys) go above @batch"


@dataclass(frozen=True)
class _Plan:
    """How one call of a decorated function fans out: the calls of the wrapped function, and how their
    results (for streams: the items of one step) combine into what the caller gets."""

    calls: list[_Call]
    combine: Callable[[list[Any]], Any]
    # For streams that may end at different steps: what stands for call i's item once its stream has ended
    # (given STREAM_END at the step it ends, None after). None: the streams must end together.
    fill: Callable[[int, Any], Any] | None = None


_Planner = Callable[[tuple[Any, ...], dict[str, Any]], _Plan]
_Fill = Callable[[int, Any], Any]


def _adapter(name: str, planner: _Planner) -> Callable[[Callable[P, R]], Callable[P, R]]:
    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        # Decided once, from the innermost function (wrapt proxies __code__), so a stack stays one kind.
        # inspect reads only functions and partials; a callable object's kind is its __call__'s.
        call = inspect.getattr_static(type(fn), "__call__", None)
        kind = call if inspect.isfunction(call) and not isinstance(fn, partial) else fn
        if inspect.isasyncgenfunction(kind):
            runner: Callable[..., Any] = _run_async_stream
        elif inspect.iscoroutinefunction(kind):
            runner = _run_async
        elif inspect.isgeneratorfunction(kind):
            runner = _run_stream
        else:
            runner = _run_plain
        wrapper: Callable[P, R] = wrapt.FunctionWrapper(fn, partial(runner, name, planner))
        return wrapper

    return decorate


def _run_plain(name: str, planner: _Planner, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    plan = planner(args, kwargs)
    return plan.combine([wrapped(*a, **k) for a, k in plan.calls])


async def _run_async(name: str, planner: _Planner, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    plan = planner(args, kwargs)
    return plan.combine([await wrapped(*a, **k) for a, k in plan.calls])


def _run_stream(name: str, planner: _Planner, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Iterator[Any]:
    plan = planner(args, kwargs)
    with closing(_zip_streams(name, [wrapped(*a, **k) for a, k in plan.calls], plan.fill)) as steps:
        for step in steps:
            yield plan.combine(step)


async def _run_async_stream(
    name: str, planner: _Planner, wrapped: Any, instance: Any, args: Any, kwargs: Any
) -> AsyncIterator[Any]:
    plan = planner(args, kwargs)
    async with aclosing(_zip_async_streams(name, [wrapped(*a, **k) for a, k in plan.calls], plan.fill)) as steps:
        async for step in steps:
            yield plan.combine(step)


_END = object()


def _zip_streams(name: str, streams: list[Any], fill: _Fill | None) -> Generator[list[Any], None, None]:
    ended = [False] * len(streams)
    try:
        for step in itertools.count():
            items = [_END if done else next(stream, _END) for stream, done in zip(streams, ended, strict=True)]
            merged = _merge_step(name, items, ended, fill, step)
            if merged is None:
                return
            yield merged
    finally:
        for stream in streams:
            stream.close()


async def _zip_async_streams(name: str, streams: list[Any], fill: _Fill | None) -> AsyncGenerator[list[Any], None]:
    ended = [False] * len(streams)
    try:
        for step in itertools.count():
            items = [_END if done else await anext(stream, _END) for stream, done in zip(streams, ended, strict=True)]
            merged = _merge_step(name, items, ended, fill, step)
            if merged is None:
                return
            yield merged
    finally:
        for stream in streams:
            await stream.aclose()


def _merge_step(name: str, items: list[Any], ended: list[bool], fill: _Fill | None, step: int) -> list[Any] | None:
    """One step's items with the streams that ended filled in (``ended`` is updated); None once all ended."""
    over = sum(item is _END for item in items)
    if over == len(items):
        return None
    if over and fill is None:
        raise DecoratorUsageError(
            f"{name}: the {len(items)} streams of one call must yield equally often, "
            f"but {over} ended after {step} steps while the others went on"
        )
    if not over or fill is None:
        return items
    merged = []
    for i, item in enumerate(items):
        if item is _END:
            item = fill(i, None if ended[i] else STREAM_END)
            ended[i] = True
        merged.append(item)
    return merged


def _requests_of(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Requests:
    if kwargs:
        raise DecoratorUsageError(
            f"{name} expects a list of requests but received keyword inputs {sorted(kwargs)}; {_REQUEST_LEVEL}, "
            "never below it"
        )
    requests = args[0] if len(args) == 1 else None
    if not isinstance(requests, Sequence) or isinstance(requests, str | bytes):
        raise DecoratorUsageError(f"{name} expects one list of requests, got {len(args)} positional arguments")
    if not all(isinstance(request, Mapping) for request in requests):
        raise DecoratorUsageError(f"{name}: every request must be a mapping of input name to array")
    return requests


def _inputs_of(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    if args:
        got = "a list of requests" if isinstance(args[0], list | tuple) else "positional arguments"
        raise DecoratorUsageError(f"{name} must be applied below @batch (it received {got})")
    return kwargs


def _batch_size(name: str, inputs: Mapping[str, Any], default: int) -> int:
    """The rows shared by all inputs; ``default`` when there are no inputs."""
    sizes: dict[str, int] = {}
    for key, value in inputs.items():
        shape = np.shape(value)
        if not shape:
            raise DecoratorUsageError(
                f"{name}: input {key!r} has no batch dim (shape []); if @first_value made it so, "
                "put @first_value innermost"
            )
        sizes[key] = shape[0]
    if len(set(sizes.values())) > 1:
        raise DecoratorUsageError(f"{name}: inputs disagree on the batch size: {sizes}")
    return next(iter(sizes.values()), default)


def _as_outputs(name: str, result: Any) -> dict[str, np.ndarray]:
    if isinstance(result, (list, tuple)):  # PyTriton's convention: the outputs in the order they were declared
        result = _named_outputs(name, result)
    if not isinstance(result, Mapping):
        raise DecoratorUsageError(
            f"{name}: the function must return a dict of output name to array, got {type(result).__name__}"
        )
    # torch tensors stay as they are (on their device) until the worker writes them out: see torch_outputs.
    return {key: value if is_torch_tensor(value) else np.asarray(value) for key, value in result.items()}


def _named_outputs(name: str, result: list[Any] | tuple[Any, ...]) -> dict[str, Any]:
    context = worker_context()
    names = context.outputs if context is not None else ()
    if len(names) != len(result):
        raise DecoratorUsageError(
            f"{name}: the function returned a {type(result).__name__} of {len(result)} outputs; a list or tuple must "
            f"hold one array per declared output ({len(names)}: {list(names)}), else return a dict"
        )
    return dict(zip(names, result, strict=True))


def _check_rows(name: str, outputs: Mapping[str, np.ndarray], rows: int, what: str) -> None:
    for key, value in outputs.items():
        if value.ndim == 0 or value.shape[0] != rows:
            got = value.shape[0] if value.ndim else "a scalar"
            raise DecoratorUsageError(
                f"{name}: output {key!r}: first dim must be {what} {rows}, got {got} (shape {list(value.shape)})"
            )


def _single_result(results: list[Any]) -> Any:
    return results[0]


# ---- request level --------------------------------------------------------------------------------------
# `batch` and `sample` are typed ``Callable[..., ...]``, not ``Callable[[Requests], ...]``: a method's
# ``self`` stays in front of the requests (wrapt binds it), and mypy must accept decorated methods too.


@overload
def batch(fn: Callable[..., AsyncIterator[Outputs]]) -> Callable[..., AsyncGenerator[Responses, None]]: ...
@overload
def batch(fn: Callable[..., Awaitable[Outputs]]) -> Callable[..., Awaitable[Responses]]: ...
@overload
def batch(fn: Callable[..., Iterator[Outputs]]) -> Callable[..., Generator[Responses, None, None]]: ...
@overload
def batch(fn: Callable[..., Outputs]) -> Callable[..., Responses]: ...
def batch(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Call a batch-level ``fn(**inputs) -> dict`` once for all requests, each input concatenated along
    the batch dim; every output's first dim must be the total batch size, and is split back per request
    (as views). A lone request's arrays pass as they are, uncopied.

    >>> f = batch(lambda x: {"y": x + 1})
    >>> [out["y"].tolist() for out in f([Request({"x": np.zeros(1)}), Request({"x": np.ones(2)})])]
    [[1.0], [2.0, 2.0]]
    """
    return _adapter("@batch", _plan_batch)(fn)


def _plan_batch(args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Plan:
    requests = _requests_of("@batch", args, kwargs)
    rows = [_batch_size("@batch", request, 1) for request in requests]
    calls: list[_Call] = [((), _concatenate(requests))] if requests else []
    return _Plan(calls, partial(_split_outputs, rows=rows))


def _concatenate(requests: Requests) -> dict[str, Any]:
    names = set(requests[0])
    for request in requests[1:]:
        if set(request) != names:
            raise DecoratorUsageError(
                f"@batch: requests in one batch have different inputs ({sorted(names)} and {sorted(request)}); "
                "fill optional inputs with @fill_optionals(...) or split the batch with @group_by_keys, above @batch"
            )
    if len(requests) == 1:
        return dict(requests[0])
    inputs = {}
    for name in requests[0]:
        arrays = [request[name] for request in requests]
        joined = _adjacent_views(arrays)
        if joined is not None:
            inputs[name] = joined
            continue
        try:
            inputs[name] = np.concatenate(arrays, axis=0)
        except ValueError as exc:
            shapes = ", ".join(str(list(np.shape(request[name]))) for request in requests)
            raise DecoratorUsageError(
                f"@batch: input {name!r} cannot be concatenated across requests: its non-batch dims differ ({shapes})"
            ) from exc
    return inputs


def _adjacent_views(arrays: list[Any]) -> np.ndarray | None:
    """The arrays as one array without a copy, when they are back-to-back views of one buffer: how the server
    hands a worker a batch (each request's rows follow the previous request's in shared memory). None otherwise.

    >>> flat = np.arange(6.0)
    >>> _adjacent_views([flat[:2].reshape(1, 2), flat[2:6].reshape(2, 2)])
    array([[0., 1.],
           [2., 3.],
           [4., 5.]])
    """
    first = arrays[0]
    if not isinstance(first, np.ndarray) or first.base is None or first.ndim == 0:
        return None
    base, address = first.base, first.ctypes.data
    for array in arrays:
        same = isinstance(array, np.ndarray) and array.base is base and array.flags.c_contiguous
        if not same or array.dtype != first.dtype or array.shape[1:] != first.shape[1:] or array.ctypes.data != address:
            return None
        address += array.nbytes
    rows = sum(array.shape[0] for array in arrays)
    strides = [first.itemsize]  # C order, computed: a dim of size 1 may carry any stride
    for dim in reversed(first.shape[1:]):
        strides.insert(0, strides[0] * dim)
    # Within ``base`` (every view is of it, back to back), which the result keeps alive through ``first``.
    return np.lib.stride_tricks.as_strided(first, shape=(rows, *first.shape[1:]), strides=strides)


def _split_outputs(results: list[Any], rows: list[int]) -> Responses:
    if not rows:
        return []
    outputs = _as_outputs("@batch", results[0])
    _check_rows("@batch", outputs, sum(rows), "the batch size")
    if len(rows) == 1:
        return [outputs]
    bounds = list(itertools.accumulate(rows, initial=0))  # slices, not np.split: several µs less per batch
    return [{key: value[start:end] for key, value in outputs.items()} for start, end in itertools.pairwise(bounds)]


@overload
def sample(fn: Callable[..., AsyncIterator[Outputs]]) -> Callable[..., AsyncGenerator[Responses, None]]: ...
@overload
def sample(fn: Callable[..., Awaitable[Outputs]]) -> Callable[..., Awaitable[Responses]]: ...
@overload
def sample(fn: Callable[..., Iterator[Outputs]]) -> Callable[..., Generator[Responses, None, None]]: ...
@overload
def sample(fn: Callable[..., Outputs]) -> Callable[..., Responses]: ...
def sample(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Call ``fn(**inputs) -> dict`` once per request, in order. A generator ``fn`` (streaming, for a
    decoupled model) is started once per request and the streams are zipped: step k yields each request's
    k-th dict; a request whose generator has returned gets `STREAM_END` at that step (its stream is over)
    and None after, while the others go on.

    >>> f = sample(lambda x: {"n": np.array(x.size)})
    >>> [out["n"].item() for out in f([Request({"x": np.zeros(3)}), Request({"x": np.zeros(1)})])]
    [3, 1]
    """
    return _adapter("@sample", _plan_sample)(fn)


def _plan_sample(args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Plan:
    requests = _requests_of("@sample", args, kwargs)
    return _Plan([((), dict(request)) for request in requests], _sample_outputs, fill=lambda _, marker: marker)


def _sample_outputs(results: list[Any]) -> list[Any]:
    return [r if r is None or r is STREAM_END else _as_outputs("@sample", r) for r in results]


def fill_optionals(**defaults: Any) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Give each request the inputs it lacks among ``defaults``: the default (an array or scalar,
    without the batch dim) repeated once per row of that request (one row if it has no inputs).

    Text defaults become object arrays of `bytes`, as BYTES tensors are held in memory.

    >>> f = fill_optionals(t=0.5)(lambda requests: [dict(r) for r in requests])
    >>> f([Request({"x": np.zeros((2, 1))})])[0]["t"].tolist()
    [0.5, 0.5]
    """
    arrays = {name: _default_array(name, value) for name, value in defaults.items()}

    def plan(args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Plan:
        requests = _requests_of("@fill_optionals", args, kwargs)
        return _Plan([(([_fill(request, arrays) for request in requests],), {})], _single_result)

    return _adapter("@fill_optionals", plan)


def _default_array(name: str, value: Any) -> np.ndarray:
    problem = f"@fill_optionals: the default of {name!r} must be an array or a scalar"
    if value is None:
        raise ConfigurationError(f"{problem}, got None")
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{problem}: {exc}") from exc
    if array.dtype.kind in "SU":
        return (np.char.encode(array, "utf-8") if array.dtype.kind == "U" else array).astype(object)
    if array.dtype.kind == "O" and not all(isinstance(item, bytes | str) for item in array.flat):
        raise ConfigurationError(f"{problem}, got {type(value).__name__} {value!r}")
    return array


def _fill(request: Mapping[str, np.ndarray], defaults: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
    missing = [name for name in defaults if name not in request]
    if not missing:
        return request
    rows = _batch_size("@fill_optionals", request, 1)
    data = dict(request)
    for name in missing:
        # A real copy, not a stride-0 broadcast view: writable and contiguous, like any other input.
        data[name] = np.repeat(defaults[name][np.newaxis], rows, axis=0)
    return Request(data, getattr(request, "parameters", None), getattr(request, "traceparent", None))


def group_by_keys(fn: Callable[P, R]) -> Callable[P, R]:
    """Call ``fn(requests)`` once per set of input names (requests in their original order within a group)
    and return the responses in the original order; put it above `batch` when inputs are optional."""
    return _adapter("@group_by_keys", _plan_group_by_keys)(fn)


def _plan_group_by_keys(args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Plan:
    requests = _requests_of("@group_by_keys", args, kwargs)
    groups: dict[frozenset[str], list[int]] = {}
    for index, request in enumerate(requests):
        groups.setdefault(frozenset(request), []).append(index)
    positions = list(groups.values())
    calls: list[_Call] = [(([requests[i] for i in group],), {}) for group in positions]
    ungroup = partial(_ungroup_responses, positions=positions, total=len(requests))
    return _Plan(calls, ungroup, fill=lambda call, marker: [marker] * len(positions[call]))


def _ungroup_responses(results: list[Any], positions: list[list[int]], total: int) -> list[Any]:
    responses: list[Any] = [None] * total
    for group, result in zip(positions, results, strict=True):
        if not isinstance(result, Sequence) or len(result) != len(group):
            got = len(result) if isinstance(result, Sequence) else type(result).__name__
            raise DecoratorUsageError(f"@group_by_keys: a group of {len(group)} requests got {got} responses")
        for index, response in zip(group, result, strict=True):
            responses[index] = response
    return responses


# ---- batch level ----------------------------------------------------------------------------------------


def group_by_values(*keys: str, pad_fn: PadFn | None = None) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Call ``fn(**inputs)`` once per group of rows holding equal values in the ``keys`` inputs (whole rows
    compared; inputs not in the batch are ignored), and reassemble the outputs in the original row order.

    Outputs whose non-batch dims differ between groups go through ``pad_fn`` (e.g. `ConstantPadder`)
    to become concatenable; without one that is a `DecoratorUsageError`.
    """
    _check_keys("@group_by_values", keys)
    if pad_fn is not None and not callable(pad_fn):
        raise ConfigurationError(f"@group_by_values: pad_fn must be callable, got {pad_fn!r}")

    def plan(args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Plan:
        inputs = _inputs_of("@group_by_values", args, kwargs)
        groups = _group_rows(inputs, keys)
        if len(groups) <= 1:
            return _Plan([((), inputs)], _single_result)
        calls: list[_Call] = [((), {name: np.asarray(v)[rows] for name, v in inputs.items()}) for rows in groups]
        return _Plan(calls, partial(_merge_groups, groups=groups, pad_fn=pad_fn))

    return _adapter("@group_by_values", plan)


def _group_rows(inputs: Mapping[str, Any], keys: tuple[str, ...]) -> list[np.ndarray]:
    """Row indices of each group, groups in order of first appearance."""
    compared = [np.asarray(inputs[key]) for key in keys if key in inputs]
    groups: dict[tuple[object, ...], list[int]] = {}
    for row in range(_batch_size("@group_by_values", inputs, 0)):
        groups.setdefault(tuple(_row_key(value[row]) for value in compared), []).append(row)
    return [np.asarray(rows, dtype=np.intp) for rows in groups.values()]


def _row_key(row: Any) -> object:
    row = np.asarray(row)
    if row.dtype.kind == "O":
        return tuple(row.ravel().tolist())  # BYTES elements compare by value, not by object address
    # Rows of one input share dtype and shape, so their bytes decide (-0.0 and 0.0 split: harmless).
    return row.tobytes()


def _merge_groups(results: list[Any], groups: list[np.ndarray], pad_fn: PadFn | None) -> dict[str, np.ndarray]:
    outputs = [_as_outputs("@group_by_values", result) for result in results]
    for rows, output in zip(groups, outputs, strict=True):
        _check_rows("@group_by_values", output, len(rows), "the group's batch size")
    names = sorted(outputs[0])
    if any(sorted(output) != names for output in outputs):
        found = " and ".join(str(sorted(output)) for output in outputs)
        raise DecoratorUsageError(f"@group_by_values: groups returned different outputs ({found})")
    order = np.argsort(np.concatenate(groups), kind="stable")  # concatenated groups -> original rows
    return {name: _concatenate_groups(name, [output[name] for output in outputs], pad_fn)[order] for name in names}


def _concatenate_groups(name: str, arrays: list[np.ndarray], pad_fn: PadFn | None) -> np.ndarray:
    def shapes(of: Sequence[np.ndarray]) -> str:
        return ", ".join(str(list(np.shape(array))) for array in of)

    if len({array.shape[1:] for array in arrays}) > 1:
        if pad_fn is None:
            raise DecoratorUsageError(
                f"@group_by_values: output {name!r} has different non-batch dims across groups ({shapes(arrays)}); "
                "pass pad_fn=ConstantPadder() to pad them"
            )
        padded = [np.asarray(array) for array in pad_fn(arrays)]
        if [len(array) for array in padded] != [len(array) for array in arrays]:
            raise DecoratorUsageError(f"@group_by_values: pad_fn changed the groups of output {name!r}")
        arrays = padded
    try:
        return np.concatenate(arrays)
    except ValueError as exc:
        raise DecoratorUsageError(
            f"@group_by_values: output {name!r} cannot be concatenated after padding ({shapes(arrays)})"
        ) from exc


class ConstantPadder:
    """A ``pad_fn`` for `group_by_values`: pads every non-batch dim, at its end, to the largest size.

    Numeric arrays are padded with ``value``; BYTES arrays (object or ``S`` dtype) with ``bytes_value``,
    as a number is no byte string.

    >>> [a.tolist() for a in ConstantPadder(-1)([np.ones((1, 2)), np.zeros((1, 3))])]
    [[[1.0, 1.0, -1.0]], [[0.0, 0.0, 0.0]]]
    """

    def __init__(self, value: Any = 0, bytes_value: bytes = b"") -> None:
        self.value = value
        self.bytes_value = bytes_value

    def __call__(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        arrays = [np.asarray(array) for array in arrays]
        if len({array.ndim for array in arrays}) > 1:
            shapes = ", ".join(str(list(array.shape)) for array in arrays)
            raise DecoratorUsageError(f"ConstantPadder: arrays have different numbers of dims ({shapes})")
        target = [max(sizes) for sizes in zip(*(array.shape[1:] for array in arrays), strict=True)]
        return [self._pad(array, target) for array in arrays]

    def _pad(self, array: np.ndarray, target: list[int]) -> np.ndarray:
        if list(array.shape[1:]) == target:
            return array
        fill = self.bytes_value if array.dtype.kind in "OS" else self.value
        padded = np.full((array.shape[0], *target), fill, dtype=array.dtype)
        padded[tuple(slice(0, size) for size in array.shape)] = array
        return padded


@overload
def pad_batch(fn: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def pad_batch(*sizes: int) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def pad_batch(*sizes: Any) -> Any:
    """Pad the batch to the smallest of ``sizes`` that holds it (the next power of two when no sizes are
    given) by repeating its last row, call ``fn``, and trim the outputs back to the real rows. A batch
    larger than every size is not padded.

    >>> f = pad_batch(4)(lambda x: {"rows": np.full(len(x), len(x))})
    >>> f(x=np.zeros(3))["rows"].tolist()
    [4, 4, 4]
    """
    if len(sizes) == 1 and callable(sizes[0]):  # bare @pad_batch
        return pad_batch()(sizes[0])
    if not all(isinstance(size, int | np.integer) and not isinstance(size, bool) and size > 0 for size in sizes):
        raise ConfigurationError(f"@pad_batch: sizes must be positive ints, got {list(sizes)}")
    targets = sorted(int(size) for size in sizes)

    def plan(args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Plan:
        inputs = _inputs_of("@pad_batch", args, kwargs)
        rows = _batch_size("@pad_batch", inputs, 0)
        padded_rows = _padded_size(rows, targets)
        if padded_rows == rows:
            return _Plan([((), inputs)], _single_result)
        padded = {name: _repeat_last_row(np.asarray(value), padded_rows) for name, value in inputs.items()}
        return _Plan([((), padded)], partial(_trim_outputs, padded_rows=padded_rows, rows=rows))

    return _adapter("@pad_batch", plan)


def _padded_size(rows: int, sizes: list[int]) -> int:
    if rows == 0:
        return 0  # no last row to repeat
    if not sizes:
        return 1 << (rows - 1).bit_length()
    return next((size for size in sizes if size >= rows), rows)


def _repeat_last_row(array: np.ndarray, rows: int) -> np.ndarray:
    return np.concatenate([array, np.repeat(array[-1:], rows - len(array), axis=0)])


def _trim_outputs(results: list[Any], padded_rows: int, rows: int) -> dict[str, np.ndarray]:
    outputs = _as_outputs("@pad_batch", results[0])
    _check_rows("@pad_batch", outputs, padded_rows, "the padded batch size")
    return {key: value[:rows] for key, value in outputs.items()}


def first_value(
    *keys: str, squeeze_single_values: bool = True, strict: bool = True
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Replace each ``keys`` input by its first row (PyTriton's semantics): a row of one element becomes
    a scalar unless ``squeeze_single_values=False``; with ``strict`` (the default) rows that differ are a
    `DecoratorUsageError`. Inputs not in the batch are ignored. Put it innermost.

    >>> f = first_value("t")(lambda x, t: {"y": x * t})
    >>> f(x=np.ones(2), t=np.array([[2.0], [2.0]]))["y"].tolist()
    [2.0, 2.0]
    """
    _check_keys("@first_value", keys)

    def plan(args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Plan:
        inputs = dict(_inputs_of("@first_value", args, kwargs))
        for key in keys:
            if key in inputs:
                inputs[key] = _first_row(key, np.asarray(inputs[key]), squeeze_single_values, strict)
        return _Plan([((), inputs)], _single_result)

    return _adapter("@first_value", plan)


def _first_row(key: str, value: np.ndarray, squeeze: bool, strict: bool) -> Any:
    if value.ndim == 0 or len(value) == 0:
        raise DecoratorUsageError(f"@first_value: input {key!r} has no rows (shape {list(value.shape)})")
    if strict and not np.array_equal(
        value, np.broadcast_to(value[:1], value.shape), equal_nan=value.dtype.kind in "fc"
    ):
        raise DecoratorUsageError(
            f"@first_value: rows of input {key!r} differ; send one value in every row, or pass strict=False"
        )
    row = value[0]
    if squeeze and isinstance(row, np.ndarray) and row.size == 1:
        return row.reshape(())[()]  # a numpy scalar (the bytes themselves for BYTES)
    return row


def _check_keys(name: str, keys: tuple[Any, ...]) -> None:
    if not keys or not all(isinstance(key, str) and key for key in keys):
        raise ConfigurationError(f"{name} needs one or more input names, got {list(keys)}; e.g. {name}('temperature')")
