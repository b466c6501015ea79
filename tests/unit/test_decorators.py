from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from typing import Any

import numpy as np
import pytest

from pybind_serve import context
from pybind_serve.decorators import (
    ConstantPadder,
    batch,
    fill_optionals,
    first_value,
    group_by_keys,
    group_by_values,
    pad_batch,
    sample,
)
from pybind_serve.errors import ConfigurationError, DecoratorUsageError
from pybind_serve.request import STREAM_END, Request


def req(parameters: dict[str, Any] | None = None, **arrays: Any) -> Request:
    return Request({name: np.asarray(value) for name, value in arrays.items()}, parameters)


async def collect(stream: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in stream]


def tolists(responses: list[dict[str, np.ndarray]]) -> list[dict[str, Any]]:
    return [{name: value.tolist() for name, value in response.items()} for response in responses]


# ---- @batch ---------------------------------------------------------------------------------------------


def test_batch_concatenates_requests_of_different_sizes_and_splits_outputs_back() -> None:
    seen: list[dict[str, tuple[int, ...]]] = []

    @batch
    def double(x: np.ndarray) -> dict[str, np.ndarray]:
        seen.append({"x": x.shape})
        return {"y": x * 2}

    out = double([req(x=[[1, 1]]), req(x=[[2, 2], [3, 3], [4, 4]])])

    assert seen == [{"x": (4, 2)}]
    assert tolists(out) == [{"y": [[2, 2]]}, {"y": [[4, 4], [6, 6], [8, 8]]}]


def test_batch_passes_a_lone_request_uncopied_and_splits_outputs_as_views() -> None:
    seen: dict[str, np.ndarray] = {}
    result = np.arange(6).reshape(3, 2)

    @batch
    def f(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        seen.update(inputs)
        return {"y": result}

    request = req(x=np.zeros((3, 2)))
    assert f([request])[0]["y"] is result
    assert seen["x"] is request["x"]
    two = f([req(x=np.zeros((1, 2))), req(x=np.zeros((2, 2)))])
    assert all(np.shares_memory(part["y"], result) for part in two)


def test_batch_converts_array_like_outputs() -> None:
    f = batch(lambda x: {"y": x.sum(axis=1).tolist(), "z": [[0]] * len(x)})
    out = f([req(x=[[1, 2]]), req(x=[[3, 4]])])
    assert isinstance(out[1]["y"], np.ndarray)
    assert tolists(out) == [{"y": [3], "z": [[0]]}, {"y": [7], "z": [[0]]}]


def test_batch_with_requests_without_inputs_counts_one_row_each() -> None:
    f = batch(lambda: {"y": np.arange(2)})
    assert tolists(f([req(), req()])) == [{"y": [0]}, {"y": [1]}]


def test_batch_of_no_requests_returns_no_responses_without_calling() -> None:
    calls: list[object] = []
    f = batch(lambda **inputs: calls.append(inputs) or {})
    assert f([]) == []
    assert calls == []


def test_batch_rejects_an_output_whose_first_dim_is_not_the_batch_size() -> None:
    f = batch(lambda x: {"y": np.zeros((3, 2))})
    message = r"output 'y': first dim must be the batch size 4, got 3 \(shape \[3, 2\]\)"
    with pytest.raises(DecoratorUsageError, match=message):
        f([req(x=np.zeros((1, 2))), req(x=np.zeros((3, 2)))])
    with pytest.raises(DecoratorUsageError, match=r"output 's': first dim must be the batch size 1, got a scalar"):
        batch(lambda x: {"s": 1.0})([req(x=[0])])


def test_batch_rejects_a_result_that_is_not_a_dict() -> None:
    with pytest.raises(DecoratorUsageError, match="must return a dict of output name to array, got int"):
        batch(lambda x: 3)([req(x=[1])])


def test_a_list_or_tuple_of_outputs_is_named_in_declared_order_inside_a_worker() -> None:
    context.enter(context.WorkerContext("m", 1, 0, outputs=("sum", "twice")))
    try:
        out = batch(lambda x: (x + 1, x * 2))([req(x=[1]), req(x=[2, 3])])
        assert tolists(out) == [{"sum": [2], "twice": [2]}, {"sum": [3, 4], "twice": [4, 6]}]
        assert tolists(sample(lambda x: [x, x])([req(x=[5])])) == [{"sum": [5], "twice": [5]}]
        with pytest.raises(DecoratorUsageError, match=r"a tuple of 1 outputs; .* \(2: \['sum', 'twice'\]\)"):
            batch(lambda x: (x,))([req(x=[1])])
    finally:
        context.enter(None)  # type: ignore[arg-type]


def test_a_tuple_of_outputs_outside_a_worker_says_to_return_a_dict() -> None:
    with pytest.raises(DecoratorUsageError, match=r"a tuple of 1 outputs.*else return a dict"):
        batch(lambda x: (x,))([req(x=[1])])


def test_batch_rejects_requests_with_different_inputs_and_suggests_fill_optionals() -> None:
    f = batch(lambda **inputs: {"y": inputs["a"]})
    with pytest.raises(DecoratorUsageError, match=r"different inputs \(\['a', 'b'\] and \['a'\]\).*@fill_optionals"):
        f([req(a=[1], b=[1]), req(a=[2])])


def test_batch_rejects_inputs_whose_non_batch_dims_differ() -> None:
    f = batch(lambda x: {"y": x})
    with pytest.raises(DecoratorUsageError, match=r"input 'x' .*non-batch dims differ \(\[1, 2\], \[1, 3\]\)"):
        f([req(x=np.zeros((1, 2))), req(x=np.zeros((1, 3)))])


def test_batch_rejects_inputs_without_or_disagreeing_on_the_batch_dim() -> None:
    f = batch(lambda **inputs: {})
    with pytest.raises(DecoratorUsageError, match=r"input 't' has no batch dim \(shape \[\]\)"):
        f([req(t=0.5)])
    with pytest.raises(DecoratorUsageError, match=r"inputs disagree on the batch size: \{'a': 1, 'b': 2\}"):
        f([req(a=[1], b=[1, 2])])


def test_batch_below_batch_is_an_error() -> None:
    f = batch(batch(lambda x: {"y": x}))
    with pytest.raises(DecoratorUsageError, match=r"@batch expects a list of requests but received keyword inputs"):
        f([req(x=[1])])


@pytest.mark.parametrize(
    ("args", "message"),
    [((), "got 0 positional arguments"), (([], []), "got 2 positional arguments"), (("ab",), "got 1 positional")],
)
def test_request_level_decorators_reject_anything_but_one_list_of_requests(args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(DecoratorUsageError, match=f"@batch expects one list of requests, {message}"):
        batch(lambda: {})(*args)
    with pytest.raises(DecoratorUsageError, match="@sample: every request must be a mapping"):
        sample(lambda: {})([[1, 2]])


def test_batch_streams_a_generator_one_split_step_at_a_time() -> None:
    @batch
    def count(x: np.ndarray) -> Iterator[dict[str, np.ndarray]]:
        for step in range(3):
            yield {"y": x + step}

    assert inspect.isgeneratorfunction(count)
    steps = list(count([req(x=[0]), req(x=[10, 20])]))
    assert [tolists(step) for step in steps] == [
        [{"y": [0]}, {"y": [10, 20]}],
        [{"y": [1]}, {"y": [11, 21]}],
        [{"y": [2]}, {"y": [12, 22]}],
    ]


def test_closing_a_stream_early_closes_the_wrapped_generator() -> None:
    closed: list[bool] = []

    @batch
    def endless(x: np.ndarray) -> Iterator[dict[str, np.ndarray]]:
        try:
            while True:
                yield {"y": x}
        finally:
            closed.append(True)

    stream = endless([req(x=[1])])
    assert tolists(next(stream)) == [{"y": [1]}]
    stream.close()
    assert closed == [True]


def test_batch_wraps_async_functions_and_async_generators() -> None:
    @batch
    async def add(x: np.ndarray) -> dict[str, np.ndarray]:
        await asyncio.sleep(0)
        return {"y": x + 1}

    @batch
    async def stream(x: np.ndarray) -> AsyncIterator[dict[str, np.ndarray]]:
        for step in range(2):
            yield {"y": x * step}

    assert inspect.iscoroutinefunction(add)
    assert inspect.isasyncgenfunction(stream)
    assert tolists(asyncio.run(add([req(x=[1]), req(x=[2, 3])]))) == [{"y": [2]}, {"y": [3, 4]}]
    steps = asyncio.run(collect(stream([req(x=[1]), req(x=[2])])))
    assert [tolists(step) for step in steps] == [[{"y": [0]}, {"y": [0]}], [{"y": [1]}, {"y": [2]}]]


def test_batch_keeps_name_and_signature_works_on_methods_and_sticks_nothing_on_the_function() -> None:
    def infer(x: np.ndarray) -> dict[str, np.ndarray]:
        """Doc."""
        return {"y": x}

    before = dict(vars(infer))
    wrapped = batch(infer)
    assert (wrapped.__name__, wrapped.__doc__, str(inspect.signature(wrapped))) == (
        "infer",
        "Doc.",
        str(inspect.signature(infer)),
    )
    assert vars(infer) == before

    class Model:
        scale = 3

        @batch
        def infer(self, x: np.ndarray) -> dict[str, np.ndarray]:
            return {"y": x * self.scale}

    assert tolists(Model().infer([req(x=[1]), req(x=[2])])) == [{"y": [3]}, {"y": [6]}]


def test_batch_reads_the_kind_of_callable_objects_and_partials() -> None:
    class Model:
        async def __call__(self, x: np.ndarray, k: int = 2) -> dict[str, np.ndarray]:
            return {"y": x * k}

    from_object = batch(Model())
    from_partial = batch(partial(Model().__call__, k=3))
    # inspect sees the object itself (wrapt proxies it), but the wrapper awaits its async __call__.
    assert tolists(asyncio.run(from_object([req(x=[1])]))) == [{"y": [2]}]
    assert tolists(asyncio.run(from_partial([req(x=[1])]))) == [{"y": [3]}]


def test_a_stack_on_a_method_binds_self_through_every_layer() -> None:
    class Model:
        scale = 5

        @batch
        @pad_batch(4)
        @first_value("t")
        def infer(self, x: np.ndarray, t: np.floating) -> dict[str, np.ndarray]:
            return {"y": x * self.scale * t + len(x)}

    assert tolists(Model().infer([req(x=[1], t=[1]), req(x=[1, 1], t=[1, 1])])) == [{"y": [9]}, {"y": [9, 9]}]


# ---- @sample --------------------------------------------------------------------------------------------


def test_sample_calls_once_per_request_in_order() -> None:
    seen: list[list[int]] = []

    @sample
    def f(x: np.ndarray) -> dict[str, Any]:
        seen.append(x.tolist())
        return {"n": [len(x)]}

    out = f([req(x=[1, 2, 3]), req(x=[4])])
    assert seen == [[1, 2, 3], [4]]
    assert tolists(out) == [{"n": [3]}, {"n": [1]}]
    assert isinstance(out[0]["n"], np.ndarray)


def test_sample_rejects_a_result_that_is_not_a_dict() -> None:
    with pytest.raises(DecoratorUsageError, match=r"@sample: the function must return a dict.*got str"):
        sample(lambda x: "x")([req(x=[1])])


def test_sample_zips_the_streams_of_each_request() -> None:
    @sample
    def f(x: np.ndarray) -> Iterator[dict[str, np.ndarray]]:
        for step in range(2):
            yield {"y": x + step}

    steps = list(f([req(x=[0]), req(x=[5])]))
    assert [tolists(step) for step in steps] == [[{"y": [0]}, {"y": [5]}], [{"y": [1]}, {"y": [6]}]]


def test_sample_streams_end_one_by_one_with_stream_end_then_none() -> None:
    @sample
    def f(n: np.ndarray) -> Iterator[dict[str, np.ndarray]]:
        for step in range(int(n[0])):
            yield {"y": np.array([step])}

    steps = list(f([req(n=[1]), req(n=[3]), req(n=[2])]))
    assert [
        [item if item is None or item is STREAM_END else tolists([item])[0] for item in step] for step in steps
    ] == [
        [{"y": [0]}, {"y": [0]}, {"y": [0]}],
        [STREAM_END, {"y": [1]}, {"y": [1]}],
        [None, {"y": [2]}, STREAM_END],
    ]


def test_group_by_keys_streams_end_per_group() -> None:
    @group_by_keys
    def f(requests: list[Request]) -> Iterator[list[dict[str, Any]]]:
        for step in range(len(requests)):
            yield [{"step": step} for _ in requests]

    steps = list(f([req(a=[1]), req(b=[1]), req(a=[2])]))  # groups: a (2 requests), b (1 request)
    assert steps == [
        [{"step": 0}, {"step": 0}, {"step": 0}],
        [{"step": 1}, STREAM_END, {"step": 1}],
    ]


def test_batch_level_streams_of_uneven_length_are_an_error() -> None:
    @batch
    @group_by_values("k")
    def f(k: np.ndarray) -> Iterator[dict[str, np.ndarray]]:
        for step in range(int(k[0, 0])):
            yield {"y": np.full((len(k), 1), step)}

    stream = f([req(k=[[1]]), req(k=[[2]])])
    next(stream)
    with pytest.raises(DecoratorUsageError, match="the 2 streams of one call must yield equally often, but 1 ended"):
        next(stream)


def test_sample_wraps_async_functions_and_async_generators() -> None:
    @sample
    async def f(x: np.ndarray) -> dict[str, np.ndarray]:
        return {"y": -x}

    @sample
    async def g(x: np.ndarray) -> AsyncIterator[dict[str, np.ndarray]]:
        for step in range(int(x[0])):
            yield {"y": np.array([step])}

    assert inspect.iscoroutinefunction(f)
    assert tolists(asyncio.run(f([req(x=[1]), req(x=[2])]))) == [{"y": [-1]}, {"y": [-2]}]
    steps = asyncio.run(collect(g([req(x=[2]), req(x=[2])])))
    assert [tolists(step) for step in steps] == [[{"y": [0]}, {"y": [0]}], [{"y": [1]}, {"y": [1]}]]
    steps = asyncio.run(collect(g([req(x=[2]), req(x=[1])])))
    assert [step[1] if step[1] is STREAM_END else tolists([step[1]])[0] for step in steps] == [{"y": [0]}, STREAM_END]


# ---- @fill_optionals ------------------------------------------------------------------------------------


def echo(requests: list[Request]) -> list[Request]:
    return list(requests)


def test_fill_optionals_repeats_defaults_per_row_and_keeps_present_inputs_and_parameters() -> None:
    f = fill_optionals(t=np.float32(0.5), bias=np.array([1, 2]))(echo)
    given = req({"priority": 1}, x=np.zeros((3, 1)), t=np.full(3, 9.0, dtype=np.float32))
    filled, empty = f([given, req({"p": "v"})])

    assert filled.parameters == {"priority": 1}
    assert filled["t"] is given["t"]
    assert filled["bias"].tolist() == [[1, 2]] * 3
    assert filled["bias"].flags.writeable
    assert (empty["t"].tolist(), empty["t"].dtype, empty["bias"].shape) == ([0.5], np.float32, (1, 2))
    assert isinstance(empty, Request)
    assert empty.parameters == {"p": "v"}


def test_fill_optionals_leaves_complete_requests_as_they_are() -> None:
    complete = req(t=[1.0])
    assert fill_optionals(t=0.0)(echo)([complete])[0] is complete


@pytest.mark.parametrize("default", [b"ab", "ab", np.array([b"ab"], dtype=object)])
def test_fill_optionals_makes_text_defaults_bytes_object_arrays(default: Any) -> None:
    filled = fill_optionals(text=default)(echo)([req(x=[1, 2])])[0]["text"]
    assert filled.dtype == object
    assert filled.ravel().tolist() == [b"ab", b"ab"]


@pytest.mark.parametrize(
    ("default", "message"),
    [(None, "got None"), ([[1], [1, 2]], "inhomogeneous"), (object(), "got object"), ({"a": 1}, "got dict")],
)
def test_fill_optionals_rejects_defaults_that_are_not_arrays_at_decoration_time(default: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=f"@fill_optionals: the default of 't' must be .*{message}"):
        fill_optionals(t=default)


def test_fill_optionals_lets_batch_concatenate_requests_with_optional_inputs() -> None:
    @fill_optionals(t=np.float32(2))
    @batch
    def f(x: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
        return {"y": x * t}

    out = f([req(x=[1.0]), req(x=[1.0, 1.0], t=[3.0, 4.0])])
    assert tolists(out) == [{"y": [2.0]}, {"y": [3.0, 4.0]}]


def test_fill_optionals_below_batch_is_an_error() -> None:
    f = batch(fill_optionals(t=1)(lambda **inputs: {}))
    with pytest.raises(DecoratorUsageError, match="@fill_optionals expects a list of requests but received keyword"):
        f([req(x=[1])])


# ---- @group_by_keys -------------------------------------------------------------------------------------


def test_group_by_keys_calls_once_per_key_set_and_keeps_the_order() -> None:
    groups: list[list[list[str]]] = []

    @group_by_keys
    def f(requests: list[Request]) -> list[dict[str, np.ndarray]]:
        groups.append([sorted(request) for request in requests])
        return [{"keys": np.array([",".join(sorted(request))])} for request in requests]

    out = f([req(a=[1]), req(a=[1], b=[1]), req(b=[2], a=[2]), req(a=[3])])

    assert groups == [[["a"], ["a"]], [["a", "b"], ["a", "b"]]]
    assert [response["keys"][0] for response in out] == ["a", "a,b", "a,b", "a"]


def test_group_by_keys_above_batch_batches_each_group() -> None:
    sizes: list[int] = []

    @group_by_keys
    @batch
    def f(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        sizes.append(len(inputs["a"]))
        return {"y": inputs["a"] + inputs.get("b", 0)}

    out = f([req(a=[1]), req(a=[1], b=[10]), req(a=[2, 3])])
    assert sizes == [3, 1]
    assert tolists(out) == [{"y": [1]}, {"y": [11]}, {"y": [2, 3]}]


def test_group_by_keys_rejects_a_wrong_number_of_responses() -> None:
    with pytest.raises(DecoratorUsageError, match="@group_by_keys: a group of 2 requests got 1 responses"):
        group_by_keys(lambda requests: [{}])([req(a=[1]), req(a=[2])])
    with pytest.raises(DecoratorUsageError, match="a group of 1 requests got dict responses"):
        group_by_keys(lambda requests: {})([req(a=[1])])


def test_group_by_keys_zips_the_streams_of_its_groups() -> None:
    @group_by_keys
    @batch
    def f(**inputs: np.ndarray) -> Iterator[dict[str, np.ndarray]]:
        for step in range(2):
            yield {"n": np.full(len(inputs["a"]), len(inputs) * 10 + step)}

    steps = list(f([req(a=[1]), req(a=[1], b=[1])]))
    assert [tolists(step) for step in steps] == [[{"n": [10]}, {"n": [20]}], [{"n": [11]}, {"n": [21]}]]


# ---- @group_by_values -----------------------------------------------------------------------------------


def test_group_by_values_calls_once_per_value_and_restores_row_order() -> None:
    calls: list[tuple[list[int], list[int]]] = []

    @group_by_values("mode")
    def f(x: np.ndarray, mode: np.ndarray) -> dict[str, np.ndarray]:
        calls.append((x.tolist(), mode.tolist()))
        return {"y": x * mode}

    out = f(x=np.array([1, 2, 3, 4, 5]), mode=np.array([1, 2, 1, 3, 2]))

    assert calls == [([1, 3], [1, 1]), ([2, 5], [2, 2]), ([4], [3])]
    assert out["y"].tolist() == [1, 4, 3, 12, 10]


def test_group_by_values_compares_whole_rows_of_every_key() -> None:
    sizes: list[int] = []

    @group_by_values("a", "b")
    def f(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
        sizes.append(len(a))
        return {"y": np.full(len(a), len(a))}

    a = np.array([[1, 2], [1, 2], [1, 3], [1, 2]])
    b = np.array([0, 1, 0, 0])
    assert f(a=a, b=b)["y"].tolist() == [2, 1, 1, 2]
    assert sizes == [2, 1, 1]


def test_group_by_values_groups_bytes_object_arrays_by_value() -> None:
    names: list[list[bytes]] = []

    @group_by_values("lang")
    def f(text: np.ndarray, lang: np.ndarray) -> dict[str, np.ndarray]:
        names.append(lang.ravel().tolist())
        return {"out": np.array([lang[0, 0] + b":" + t for t in text.ravel()], dtype=object)}

    # Equal bytes in distinct objects, to prove comparison by value.
    lang = np.array([[b"en"], [b"f" + b"r"], [b"e" + b"n"]], dtype=object)
    out = f(text=np.array([b"a", b"b", b"c"], dtype=object), lang=lang)

    assert names == [[b"en", b"en"], [b"fr"]]
    assert out["out"].tolist() == [b"en:a", b"fr:b", b"en:c"]


def test_group_by_values_with_one_group_or_no_key_present_passes_inputs_through() -> None:
    seen: list[dict[str, np.ndarray]] = []
    f = group_by_values("mode")(lambda **inputs: seen.append(inputs) or {"y": inputs["x"]})
    x = np.arange(3)
    f(x=x, mode=np.ones(3))
    f(x=x)
    assert [inputs["x"] is x for inputs in seen] == [True, True]


def test_group_by_values_rejects_groups_with_different_output_shapes_without_pad_fn() -> None:
    f = group_by_values("n")(lambda n: {"y": np.zeros((len(n), int(n[0])))})
    with pytest.raises(DecoratorUsageError, match=r"output 'y' has different non-batch dims .*\[1, 1\], \[1, 2\].*"):
        f(n=np.array([1, 2]))


def test_group_by_values_pads_outputs_with_pad_fn() -> None:
    f = group_by_values("n", pad_fn=ConstantPadder(-1))(lambda n: {"y": np.ones((len(n), int(n[0])))})
    assert f(n=np.array([2, 1, 2]))["y"].tolist() == [[1, 1], [1, -1], [1, 1]]


def test_group_by_values_rejects_groups_that_disagree_on_outputs_or_rows() -> None:
    with pytest.raises(DecoratorUsageError, match=r"groups returned different outputs \(\['a'\] and \['b'\]\)"):
        group_by_values("n")(lambda n: {"a" if n[0] else "b": n})(n=np.array([1, 0]))
    with pytest.raises(DecoratorUsageError, match=r"output 'y': first dim must be the group's batch size 2, got 1"):
        group_by_values("n")(lambda n: {"y": n[:1]})(n=np.array([1, 0, 1]))
    bad_pad = group_by_values("n", pad_fn=lambda arrays: arrays[:1])(lambda n: {"y": np.ones((len(n), int(n[0])))})
    with pytest.raises(DecoratorUsageError, match="pad_fn changed the groups of output 'y'"):
        bad_pad(n=np.array([1, 2]))
    no_pad = group_by_values("n", pad_fn=list)(lambda n: {"y": np.ones((len(n), int(n[0])))})
    with pytest.raises(
        DecoratorUsageError, match=r"output 'y' cannot be concatenated after padding \(\[1, 1\], \[1, 2\]\)"
    ):
        no_pad(n=np.array([1, 2]))


def test_group_by_values_below_batch_and_pad_batch_below_it() -> None:
    padded_sizes: list[int] = []

    @batch
    @group_by_values("mode")
    @pad_batch(4)
    def f(x: np.ndarray, mode: np.ndarray) -> dict[str, np.ndarray]:
        padded_sizes.append(len(x))
        return {"y": x + mode}

    out = f([req(x=[1, 2], mode=[0, 10]), req(x=[3], mode=[0])])
    assert padded_sizes == [4, 4]
    assert tolists(out) == [{"y": [1, 12]}, {"y": [3]}]


def test_group_by_values_streams_and_async() -> None:
    @group_by_values("m")
    def stream(m: np.ndarray) -> Iterator[dict[str, np.ndarray]]:
        for step in range(2):
            yield {"y": m * 10 + step}

    @group_by_values("m")
    async def coro(m: np.ndarray) -> dict[str, np.ndarray]:
        return {"y": m + len(m)}

    m = np.array([1, 2, 1])
    assert [step["y"].tolist() for step in stream(m=m)] == [[10, 20, 10], [11, 21, 11]]
    assert inspect.iscoroutinefunction(coro)
    assert asyncio.run(coro(m=m))["y"].tolist() == [3, 3, 3]


# ---- ConstantPadder -------------------------------------------------------------------------------------


def test_constant_padder_pads_every_non_batch_dim_at_its_end() -> None:
    small, large = ConstantPadder(7)([np.zeros((1, 1, 3), dtype=np.int32), np.ones((2, 2, 1), dtype=np.int32)])
    assert small.tolist() == [[[0, 0, 0], [7, 7, 7]]]
    assert large.tolist() == [[[1, 7, 7], [1, 7, 7]], [[1, 7, 7], [1, 7, 7]]]
    assert (small.dtype, large.dtype) == (np.int32, np.int32)


def test_constant_padder_pads_bytes_with_bytes_value_and_returns_fitting_arrays_as_they_are() -> None:
    objects = np.array([[b"a"]], dtype=object)
    fixed = np.array([[b"xy", b"z"]])
    fitting = np.array([[b"b", b"c"]], dtype=object)
    padded_objects, padded_fixed, same = ConstantPadder()([objects, fixed, fitting])
    assert padded_objects.tolist() == [[b"a", b""]]
    assert padded_fixed is fixed
    assert same is fitting
    assert ConstantPadder(bytes_value=b"?")([objects, fitting])[0].tolist() == [[b"a", b"?"]]


def test_constant_padder_rejects_arrays_with_different_numbers_of_dims() -> None:
    with pytest.raises(
        DecoratorUsageError, match=r"ConstantPadder: arrays have different numbers of dims \(\[1\], \[1, 2\]\)"
    ):
        ConstantPadder()([np.zeros(1), np.zeros((1, 2))])


# ---- @pad_batch -----------------------------------------------------------------------------------------


def test_pad_batch_repeats_the_last_row_to_the_smallest_fitting_size_and_trims_outputs() -> None:
    seen: list[list[int]] = []

    @pad_batch(8, 2, 4)
    def f(x: np.ndarray) -> dict[str, np.ndarray]:
        seen.append(x.tolist())
        return {"y": x * 10, "rows": np.full(len(x), len(x))}

    out = f(x=np.array([1, 2, 3]))
    assert seen == [[1, 2, 3, 3]]
    assert (out["y"].tolist(), out["rows"].tolist()) == ([10, 20, 30], [4, 4, 4])
    assert f(x=np.arange(9))["rows"].tolist() == [9] * 9  # larger than every size: not padded
    assert f(x=np.arange(4))["rows"].tolist() == [4] * 4
    assert f(x=np.zeros((0, 2)))["rows"].tolist() == []  # no last row to repeat: called as is
    assert seen[-1] == []


@pytest.mark.parametrize(("rows", "padded"), [(1, 1), (3, 4), (4, 4), (5, 8)])
def test_pad_batch_without_sizes_pads_to_the_next_power_of_two(rows: int, padded: int) -> None:
    def f(x: np.ndarray) -> dict[str, np.ndarray]:
        return {"rows": np.full(len(x), len(x))}

    for decorated in (pad_batch(f), pad_batch()(f)):
        assert decorated(x=np.zeros((rows, 2)))["rows"].tolist() == [padded] * rows


def test_pad_batch_rejects_outputs_that_lost_the_padded_rows() -> None:
    f = pad_batch(4)(lambda x: {"y": x[:3]})
    with pytest.raises(DecoratorUsageError, match="output 'y': first dim must be the padded batch size 4, got 3"):
        f(x=np.zeros(2))


@pytest.mark.parametrize("size", [0, -1, 2.5, True, "8"])
def test_pad_batch_rejects_sizes_that_are_not_positive_ints(size: Any) -> None:
    with pytest.raises(ConfigurationError, match="@pad_batch: sizes must be positive ints"):
        pad_batch(4, size)


def test_pad_batch_trims_every_step_of_a_stream_and_works_async() -> None:
    @pad_batch(4)
    def stream(x: np.ndarray) -> Iterator[dict[str, np.ndarray]]:
        yield {"y": x}
        yield {"y": x + len(x)}

    @pad_batch(4)
    async def coro(x: np.ndarray) -> dict[str, np.ndarray]:
        return {"y": x + len(x)}

    assert [step["y"].tolist() for step in stream(x=np.array([1, 2]))] == [[1, 2], [5, 6]]
    assert asyncio.run(coro(x=np.array([1])))["y"].tolist() == [5]


# ---- @first_value ---------------------------------------------------------------------------------------


def test_first_value_takes_the_first_row_and_squeezes_single_values() -> None:
    seen: dict[str, Any] = {}
    f = first_value("temperature", "window", "absent")(lambda **inputs: seen.update(inputs) or {})
    f(x=np.zeros(2), temperature=np.full((2, 1), 0.7, dtype=np.float32), window=np.array([[1, 2], [1, 2]]))

    assert isinstance(seen["temperature"], np.float32)
    assert seen["temperature"] == np.float32(0.7)
    assert seen["window"].tolist() == [1, 2]
    assert seen["x"].shape == (2,)
    assert "absent" not in seen


def test_first_value_options_and_bytes_and_nan_rows() -> None:
    seen: dict[str, Any] = {}
    keep = first_value("t", squeeze_single_values=False)(lambda **inputs: seen.update(inputs) or {})
    keep(t=np.array([[0.5], [0.5]]))
    assert seen["t"].shape == (1,)

    lenient = first_value("t", strict=False)(lambda **inputs: seen.update(inputs) or {})
    lenient(t=np.array([[1], [2]]))
    assert seen["t"] == 1

    strict = first_value("t", "s")(lambda **inputs: seen.update(inputs) or {})
    strict(t=np.array([np.nan, np.nan]), s=np.array([[b"x"], [b"x"]], dtype=object))
    assert np.isnan(seen["t"])
    assert seen["s"] == b"x"


def test_first_value_rejects_rows_that_differ() -> None:
    f = first_value("temperature")(lambda **inputs: {})
    with pytest.raises(DecoratorUsageError, match="first_value: rows of input 'temperature' differ"):
        f(temperature=np.array([[0.1], [0.2]]))
    with pytest.raises(DecoratorUsageError, match="rows of input 'temperature' differ"):
        f(temperature=np.array([b"a", b"b"], dtype=object))
    with pytest.raises(DecoratorUsageError, match=r"input 'temperature' has no rows \(shape \[0\]\)"):
        f(temperature=np.array([]))


@pytest.mark.parametrize("decorator", [first_value, group_by_values])
@pytest.mark.parametrize("keys", [(), ("",), (1,)])
def test_key_decorators_need_input_names(decorator: Callable[..., Any], keys: tuple[Any, ...]) -> None:
    with pytest.raises(ConfigurationError, match="needs one or more input names"):
        decorator(*keys)


def test_group_by_values_needs_a_callable_pad_fn() -> None:
    with pytest.raises(ConfigurationError, match="pad_fn must be callable, got 0"):
        group_by_values("a", pad_fn=0)  # type: ignore[arg-type]


# ---- misuse and stacking --------------------------------------------------------------------------------

BATCH_LEVEL = {
    "@group_by_values": group_by_values("a"),
    "@pad_batch": pad_batch(4),
    "@first_value": first_value("a"),
}


@pytest.mark.parametrize("name", BATCH_LEVEL)
def test_batch_level_decorators_above_batch_are_an_error(name: str) -> None:
    f = BATCH_LEVEL[name](batch(lambda a: {"y": a}))
    with pytest.raises(
        DecoratorUsageError, match=f"{name} must be applied below @batch \\(it received a list of requests\\)"
    ):
        f([req(a=[1])])
    with pytest.raises(DecoratorUsageError, match=f"{name} must be applied below @batch \\(it received positional"):
        f(np.zeros(1))


def full_stack(fn: Callable[..., Any]) -> Callable[..., Any]:
    decorators = [
        fill_optionals(t=np.float32(1)),
        group_by_keys,
        batch,
        group_by_values("a"),
        pad_batch(8),
        first_value("t"),
    ]
    for decorator in reversed(decorators):
        fn = decorator(fn)
    return fn


STACK_REQUESTS = [
    req(x=[[1.0]], a=[[0]]),
    req(x=[[1.0], [2.0], [3.0]], a=[[1], [1], [1]], t=[2.0, 2.0, 2.0]),
    req(x=[[5.0]], a=[[2]], t=[3.0]),
]
STACK_EXPECTED = [{"y": [[1.0]]}, {"y": [[3.0], [5.0], [7.0]]}, {"y": [[17.0]]}]


def stack_outputs(x: np.ndarray, a: np.ndarray, t: np.floating) -> dict[str, np.ndarray]:
    assert len(x) == 8 and np.ndim(t) == 0
    return {"y": x * t + a}


def test_full_stack_plain() -> None:
    calls: list[int] = []

    def infer(**inputs: Any) -> dict[str, np.ndarray]:
        calls.append(len(inputs["x"]))
        return stack_outputs(**inputs)

    assert tolists(full_stack(infer)(STACK_REQUESTS)) == STACK_EXPECTED
    # One key set once 't' is filled, one @batch call, then one padded call per value of 'a'.
    assert calls == [8, 8, 8]


def test_full_stack_async_stays_a_coroutine_function() -> None:
    async def infer(**inputs: Any) -> dict[str, np.ndarray]:
        await asyncio.sleep(0)
        return stack_outputs(**inputs)

    decorated = full_stack(infer)
    assert inspect.iscoroutinefunction(decorated)
    assert tolists(asyncio.run(decorated(STACK_REQUESTS))) == STACK_EXPECTED


def test_full_stack_generator_and_async_generator() -> None:
    def stream(**inputs: Any) -> Iterator[dict[str, np.ndarray]]:
        yield stack_outputs(**inputs)
        yield {"y": np.zeros_like(inputs["x"])}

    async def astream(**inputs: Any) -> AsyncIterator[dict[str, np.ndarray]]:
        for step in stream(**inputs):
            yield step

    zeros = [{"y": [[0.0]] * len(e["y"])} for e in STACK_EXPECTED]
    assert [tolists(step) for step in full_stack(stream)(STACK_REQUESTS)] == [STACK_EXPECTED, zeros]
    decorated = full_stack(astream)
    assert inspect.isasyncgenfunction(decorated)
    assert [tolists(step) for step in asyncio.run(collect(decorated(STACK_REQUESTS)))] == [STACK_EXPECTED, zeros]


def test_other_sensible_order_group_by_keys_then_fill_optionals() -> None:
    @group_by_keys
    @fill_optionals(b=np.int64(100))
    @batch
    @first_value("b")
    def f(a: np.ndarray, b: np.integer) -> dict[str, np.ndarray]:
        return {"y": a + b}

    assert tolists(f([req(a=[1]), req(a=[2], b=[5]), req(a=[3, 4])])) == [{"y": [101]}, {"y": [7]}, {"y": [103, 104]}]


@pytest.mark.parametrize(
    "decorate",
    [
        batch,
        sample,
        group_by_keys,
        fill_optionals(a=0),
        lambda fn: batch(group_by_values("a")(fn)),
        lambda fn: batch(pad_batch(2)(fn)),
        lambda fn: batch(first_value("a")(fn)),
    ],
    ids=["batch", "sample", "group_by_keys", "fill_optionals", "group_by_values", "pad_batch", "first_value"],
)
def test_every_decorator_keeps_async_functions_async(decorate: Callable[..., Any]) -> None:
    async def infer(*requests: Any, **inputs: Any) -> Any:
        return [{"n": np.array([1])}] if requests else {"n": np.ones(np.shape(inputs["a"])[:1] or 1)}

    decorated = decorate(infer)
    assert inspect.iscoroutinefunction(decorated)
    out = asyncio.run(decorated([req(a=[5])]))
    assert tolists(out) == [{"n": [1]}]


def test_batch_joins_back_to_back_views_of_one_buffer_without_a_copy() -> None:
    """How a worker receives a batch: each request's rows follow the previous one's in shared memory."""
    flat = np.arange(12, dtype=np.float32)
    seen: list[np.ndarray] = []

    @batch
    def keep(x: np.ndarray) -> dict[str, np.ndarray]:
        seen.append(x)
        return {"y": x}

    requests = [Request({"x": flat[0:4].reshape(1, 4)}), Request({"x": flat[4:12].reshape(2, 4)})]
    outputs = keep(requests)
    assert np.shares_memory(seen[0], flat) and seen[0].shape == (3, 4)
    np.testing.assert_array_equal(seen[0], flat.reshape(3, 4))
    assert [out["y"].shape for out in outputs] == [(1, 4), (2, 4)]
    # Out of order, or from different buffers: concatenated (a copy), as before.
    keep([requests[1], requests[0]])
    assert not np.shares_memory(seen[1], flat)
    np.testing.assert_array_equal(seen[1], np.concatenate([flat[4:12], flat[0:4]]).reshape(3, 4))
    keep([Request({"x": np.zeros((1, 4), np.float32)}), Request({"x": np.ones((1, 4), np.float32)})])
    np.testing.assert_array_equal(seen[2], [[0] * 4, [1] * 4])
