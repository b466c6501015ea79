"""PyTriton's API on pybind_serve: run unchanged PyTriton scripts without Triton's binary.

This is not NVIDIA's PyTriton. It is pybind-serve-pytriton, a compatibility layer that maps PyTriton 0.7's
names and arguments onto pybind_serve; the serving itself is pybind_serve's. Code that must tell them apart
checks ``pytriton.IS_PYBIND_SERVE``.

>>> import pytriton
>>> pytriton.IS_PYBIND_SERVE, pytriton.__version__.startswith("0.7.0")
(True, True)
"""

from __future__ import annotations

import importlib.metadata
import warnings

import pybind_serve

#: True here; absent from NVIDIA's PyTriton.
IS_PYBIND_SERVE = True
#: The PyTriton API level emulated, with pybind_serve's version as a local label.
__version__ = f"0.7.0+pybind.serve.{pybind_serve.__version__.replace('+', '.').replace('-', '.')}"
#: The pybind_serve underneath.
PYBIND_SERVE_VERSION = pybind_serve.__version__


def _warn_if_beside_nvidia_pytriton() -> None:
    try:
        found = importlib.metadata.distribution("nvidia-pytriton")
    except importlib.metadata.PackageNotFoundError:
        return
    warnings.warn(
        f"nvidia-pytriton {found.version} is installed beside pybind-serve-pytriton: both provide the `pytriton` "
        "package and their files are now mixed. Uninstall both and reinstall the one you want.",
        RuntimeWarning,
        stacklevel=3,
    )


_warn_if_beside_nvidia_pytriton()
