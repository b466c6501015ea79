"""Imports point down the layers only (STYLE.md), and importing the package never imports torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pybind_serve"

# Lower number = lower layer; a module may import only from layers strictly below its own (or its own package).
LAYERS = {
    "version": 0,
    "errors": 0,
    "logs": 0,  # the log levels Serve takes, and pybind_serve's stderr handler
    "linux": 0,
    "security": 0,
    "vertex_ai": 1,
    "tracing": 1,  # Tracing: the trace settings and exporter, for serve and the fronts
    "dtypes": 1,
    "placement": 1,
    "resources": 1,  # Resources: what an instance asks of a cluster's scheduler (held by config)
    "autoscale": 1,  # Autoscale and its decisions, pure (held by config)
    "tensor": 2,
    "warmup": 2.5,  # Warmup / WarmupInput: below config (which holds them), above tensor (checked against inputs)
    "config": 3,
    "request": 3,
    "spec": 3.5,  # ModelSpec: above config (it holds one), below protocol (which reads it)
    "protocol": 4,
    "decorators": 5,
    "scheduler": 5,
    "transport": 5,
    "metrics": 5,
    "client": 5,  # uses protocol, dtypes, tensor and errors only: it runs beside any KServe v2 server
    "context": 4,
    "torch_outputs": 1,
    "system_metrics": 2,
    "worker": 6,
    "front": 6,
    "worker_process": 7,
    "supervisor": 8,
    "fronts": 8,
    "discovery": 8,  # the record a running server publishes for RemoteServe, and finding it
    "backend": 8.5,  # what Serve asks of a worker backend (the protocol; serve holds one)
    "cluster": 8.7,  # the Ray backend: workers as Ray actors (ray imported only when one starts)
    "serve": 9,
    "remote": 9.5,  # RemoteServe: binds into the server of another process, with serve's checks
    "__init__": 10,
    "integrations": 10,  # optional bridges: may use serve, and __init__ must never import them
    "cli": 10,  # the pybind-serve command: serve, client and protocol documents; __init__ never imports it
    "__main__": 11,  # python -m pybind_serve: the cli
}


def top_level(module: Path) -> str:
    return module.relative_to(PACKAGE).parts[0].removesuffix(".py")


def internal_imports(module: Path) -> set[str]:
    """The top-level pybind_serve modules that ``module`` imports."""
    tree = ast.parse(module.read_text())
    package_parts = module.relative_to(PACKAGE).parent.parts
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package_parts[: len(package_parts) - (node.level - 1)]
            target = (*base, *(node.module.split(".") if node.module else ()))
            # `from .. import name` at the top takes name from the package's __init__ unless name is a module
            names = [target[0]] if target else [a.name if _is_module(a.name) else "__init__" for a in node.names]
            found.update(names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pybind_serve."):
            found.add(node.module.split(".")[1])
    return found


def _is_module(name: str) -> bool:
    return (PACKAGE / f"{name}.py").exists() or (PACKAGE / name).is_dir()


MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(module: Path) -> None:
    own = top_level(module)
    assert own in LAYERS, f"{own} has no layer: add it to LAYERS in this test"
    upward = {name for name in internal_imports(module) if name != own and LAYERS.get(name, -1) >= LAYERS[own]}
    assert not upward, f"{module.relative_to(PACKAGE)} imports {sorted(upward)}, which are not below it"


def test_importing_the_package_does_not_import_torch() -> None:
    code = "import pybind_serve, sys; assert 'torch' not in sys.modules; assert 'flask' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
