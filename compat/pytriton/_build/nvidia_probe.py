"""Whether NVIDIA's PyTriton (``nvidia-pytriton``) is installed in the environment of a Python interpreter."""

from __future__ import annotations

import os
import subprocess

_PROBE = (
    "import importlib.metadata as m, sys\n"
    "try:\n"
    "    d = m.distribution('nvidia-pytriton')\n"
    "except m.PackageNotFoundError:\n"
    "    sys.exit(0)\n"
    "print(d.version)\n"
    "sys.exit(3)\n"
)


def nvidia_pytriton_version(python: str) -> str | None:
    """The version of ``nvidia-pytriton`` installed where ``python`` runs, or None.

    pip's build isolation puts its own paths first (``PYTHONPATH``, a sitecustomize) and hides site-packages,
    so the question goes to a fresh interpreter of the same environment, without them.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONNOUSERSITE", "PYTHONHOME")}
    probe = subprocess.run([python, "-c", _PROBE], env=env, capture_output=True, text=True, check=False)
    return probe.stdout.strip() or "?" if probe.returncode == 3 else None
