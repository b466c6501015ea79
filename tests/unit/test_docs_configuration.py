"""docs/configuration.md lists every option of the configuration objects with its real default.

The page has a ``## `Name` `` section per object, whose tables have one row per option: ``| `option` | `default`
(a note) | what it does |``. The default's first code span is a Python expression, evaluated here and compared
with the signature's default (``required`` for a parameter without one). So an option added to a signature and
not to the page, one removed from the signature and left on the page, or a default changed on one side only,
fails here.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pybind_serve
from pybind_serve import client

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"

# Each section of the page and the callables whose parameters it documents (all of them, merged).
SECTIONS: dict[str, list[Callable[..., Any]]] = {
    "Serve": [pybind_serve.Serve],
    "Serve.bind": [pybind_serve.Serve.bind, pybind_serve.RemoteServe.bind],
    "Tensor": [pybind_serve.Tensor],
    "ModelConfig": [pybind_serve.ModelConfig],
    "Autoscale": [pybind_serve.Autoscale],
    "RayBackend": [pybind_serve.RayBackend],
    "DynamicBatcher": [pybind_serve.DynamicBatcher],
    "QueuePolicy": [pybind_serve.QueuePolicy],
    "Warmup": [pybind_serve.Warmup],
    "WarmupInput": [pybind_serve.WarmupInput],
    "VertexAI": [pybind_serve.VertexAI],
    "Restriction": [pybind_serve.Restriction],
    "Tracing": [pybind_serve.Tracing],
    "RemoteServe": [pybind_serve.RemoteServe],
    "ModelClient": [
        client.ModelClient,
        client.AsyncModelClient,
        client.FuturesModelClient,
        client.DecoupledModelClient,
        client.AsyncDecoupledModelClient,
    ],
}
REQUIRED = object()
NAMESPACE = {name: getattr(pybind_serve, name) for name in pybind_serve.__all__} | {"np": np}


def documented() -> dict[str, dict[str, str]]:
    """Section name -> option -> the text of its default cell."""
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in PAGE.read_text().splitlines():
        if heading := re.fullmatch(r"## `([\w.]+)`", line):
            current = sections.setdefault(heading.group(1), {})
        elif line.startswith("## "):
            current = None
        elif current is not None and (row := re.match(r"\| `(\w+)` \| ([^|]+) \|", line)):
            assert row.group(1) not in current, f"{row.group(1)} is listed twice"
            current[row.group(1)] = row.group(2).strip()
    return sections


def parameters(target: Callable[..., Any]) -> dict[str, Any]:
    """Option -> its default (REQUIRED if none); a dataclass field's default_factory is called."""
    factories = {
        f.name: f.default_factory()
        for f in (dataclasses.fields(target) if dataclasses.is_dataclass(target) else ())
        if f.default_factory is not dataclasses.MISSING
    }
    found = {}
    for name, parameter in inspect.signature(target).parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        default = parameter.default
        found[name] = factories.get(name, REQUIRED if default is parameter.empty else default)
    return found


def value_of(cell: str) -> Any:
    if cell == "required":
        return REQUIRED
    code = re.match(r"`([^`]+)`", cell)
    assert code, f"a default cell must start with a code span or say 'required', got {cell!r}"
    return eval(code.group(1), dict(NAMESPACE))


def test_the_page_has_a_section_for_each_object_and_no_other() -> None:
    assert set(documented()) == set(SECTIONS)


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_every_option_and_its_default(section: str) -> None:
    rows = documented()[section]
    options: dict[str, list[Any]] = {}
    for target in SECTIONS[section]:
        for name, default in parameters(target).items():
            options.setdefault(name, []).append(default)
    missing = sorted(options.keys() - rows.keys())
    assert not missing, f"docs/configuration.md's `{section}` section lacks {missing}"
    gone = sorted(rows.keys() - options.keys())
    assert not gone, f"docs/configuration.md's `{section}` section lists options that do not exist: {gone}"
    for name, defaults in options.items():
        said = value_of(rows[name])
        for default in defaults:
            assert type(said) is type(default) and said == default, (
                f"docs/configuration.md says {section}({name}=...) defaults to {rows[name]}; it is {default!r}"
            )


def test_the_page_is_read_as_intended() -> None:
    """A guard on the parsing itself: a known row, its default evaluated."""
    rows = documented()
    assert value_of(rows["Serve"]["max_body_bytes"]) == 512 << 20
    assert value_of(rows["QueuePolicy"]["timeout_action"]) is pybind_serve.TimeoutAction.REJECT
    assert value_of(rows["Tensor"]["name"]) is REQUIRED
