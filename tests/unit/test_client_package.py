"""The client package: what importing it costs, and the examples in its docstrings (those without a server; the
others run in tests/integration/test_client.py)."""

from __future__ import annotations

import doctest
import subprocess
import sys
from types import ModuleType

import pytest

from pybind_serve.client import core, exchange, grpc_codec, http_codec, inputs, model, outputs, url
from pybind_serve.client.transport import pool


def imported_after(code: str) -> set[str]:
    """The modules of pybind_serve and of the transport libraries loaded after running ``code``."""
    roots = ("aiohttp", "grpc", "httpx", "pybind_serve")
    listed = f"print(' '.join(m for m in sys.modules if m.split('.')[0] in {roots!r}))"
    result = subprocess.run(
        [sys.executable, "-c", f"import sys; {code}; {listed}"], capture_output=True, text=True, timeout=60, check=True
    )
    return set(result.stdout.split())


def test_importing_pybind_serve_imports_no_client() -> None:
    loaded = imported_after("import pybind_serve")
    assert not {m for m in loaded if m.startswith(("pybind_serve.client", "aiohttp", "httpx"))}


def test_a_client_imports_only_its_own_transport_library() -> None:
    http = imported_after("from pybind_serve.client import ModelClient; ModelClient('http://localhost:1', 'm').close()")
    assert "pybind_serve.client.transport.http_sync" in http
    assert not {m for m in http if m.startswith(("aiohttp", "grpc", "httpx"))}
    grpc = imported_after("from pybind_serve.client import ModelClient; ModelClient('grpc://localhost:1', 'm').close()")
    assert "grpc" in grpc and not {m for m in grpc if m.startswith(("aiohttp", "httpx"))}


@pytest.mark.parametrize(
    "module", [core, exchange, grpc_codec, http_codec, inputs, model, outputs, url, pool], ids=lambda m: m.__name__
)
def test_docstring_examples_run(module: ModuleType) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted and not result.failed
