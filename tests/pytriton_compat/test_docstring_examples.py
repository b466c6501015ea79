"""The examples in the docstrings of `pytriton.client` and `pytriton.check` run and give what they show."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest
import pytriton.check
import pytriton.client

PACKAGES = (pytriton.client, pytriton.check)
MODULES = [package.__name__ for package in PACKAGES] + sorted(
    info.name for package in PACKAGES for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}.")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
