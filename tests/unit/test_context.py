"""`WorkerContext`, `worker_context()` and `build`: a model bound as a class is built in its worker."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from pybind_serve import ConfigurationError, WorkerContext, worker_context
from pybind_serve.context import build, enter

CONTEXT = WorkerContext("m", 2, 1, "cuda:0", "cuda:3")


class WithContext:
    def __init__(self, context: WorkerContext) -> None:
        self.context = context

    def __call__(self, requests: list[Any]) -> list[Any]:
        return requests


class WithoutArguments:
    built = 0

    def __init__(self) -> None:
        WithoutArguments.built += 1

    def __call__(self, requests: list[Any]) -> list[Any]:
        return requests


def test_a_class_is_built_with_the_context_when_it_takes_one() -> None:
    model = build(WithContext, CONTEXT)
    assert isinstance(model, WithContext) and model.context is CONTEXT


def test_a_class_without_arguments_is_built_once_per_call_of_build() -> None:
    before = WithoutArguments.built
    assert isinstance(build(WithoutArguments, CONTEXT), WithoutArguments)
    assert WithoutArguments.built == before + 1


def test_a_function_is_served_as_it_is() -> None:
    def fn(requests: list[Any]) -> list[Any]:
        return requests

    assert build(fn, CONTEXT) is fn


def test_an_instance_that_cannot_be_called_is_a_configuration_error() -> None:
    class NotCallable:
        pass

    with pytest.raises(ConfigurationError, match="NotCallable instances must be callable"):
        build(NotCallable, CONTEXT)


def test_the_context_belongs_to_the_thread_that_entered_it() -> None:
    seen: list[WorkerContext | None] = []

    def worker() -> None:
        enter(CONTEXT)
        seen.append(worker_context())

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [CONTEXT]
    assert worker_context() is None  # not this thread's
