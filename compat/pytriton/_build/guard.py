"""The shim's build backend: hatchling's, after checking that NVIDIA's PyTriton is not installed.

Both distributions provide the ``pytriton`` import package; installed over one another, pip would mix their
files without a word. pip builds in an isolated environment, so the check asks the interpreter that runs pip,
with the isolation's paths removed, whether ``nvidia-pytriton`` is installed there (`nvidia_probe`). Set
``PYBIND_SERVE_PYTRITON_FORCE=1`` to build anyway (e.g. a wheel meant for another environment).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from hatchling import build as _hatchling
from nvidia_probe import nvidia_pytriton_version
from hatchling.build import build_editable as _build_editable
from hatchling.build import build_sdist, get_requires_for_build_editable, get_requires_for_build_sdist
from hatchling.build import build_wheel as _build_wheel
from hatchling.build import get_requires_for_build_wheel

__all__ = [
    "build_editable",
    "build_sdist",
    "build_wheel",
    "get_requires_for_build_editable",
    "get_requires_for_build_sdist",
    "get_requires_for_build_wheel",
]



def _refuse_beside_nvidia_pytriton() -> None:
    if os.environ.get("PYBIND_SERVE_PYTRITON_FORCE") == "1":
        return
    version = nvidia_pytriton_version(sys.executable)
    if version is not None:
        raise RuntimeError(
            f"nvidia-pytriton {version} (NVIDIA's PyTriton) is installed in this environment, and "
            "pybind-serve-pytriton provides the same `pytriton` package: installing it would mix the two. Uninstall "
            "it first (pip uninstall nvidia-pytriton), or use another virtual environment. "
            "(PYBIND_SERVE_PYTRITON_FORCE=1 builds anyway.)"
        )


def build_wheel(wheel_directory: str, config_settings: Any = None, metadata_directory: Any = None) -> str:
    _refuse_beside_nvidia_pytriton()
    return str(_build_wheel(wheel_directory, config_settings, metadata_directory))


def build_editable(wheel_directory: str, config_settings: Any = None, metadata_directory: Any = None) -> str:
    _refuse_beside_nvidia_pytriton()
    return str(_build_editable(wheel_directory, config_settings, metadata_directory))


# hatchling's metadata hooks, where its version has them (they build nothing, so they need no check).
for _hook in ("prepare_metadata_for_build_wheel", "prepare_metadata_for_build_editable"):
    if hasattr(_hatchling, _hook):
        globals()[_hook] = getattr(_hatchling, _hook)
        __all__.append(_hook)
