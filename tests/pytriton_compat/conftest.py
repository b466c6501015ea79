"""Puts the PyTriton shim (compat/pytriton) on the import path of these tests and of the processes they start:
the one place that says where the shim comes from while it is not installed."""

from __future__ import annotations

import os
import sys
from pathlib import Path

SHIM = str(Path(__file__).resolve().parents[2] / "compat" / "pytriton")

if SHIM not in sys.path:
    sys.path.insert(0, SHIM)
if SHIM not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [SHIM, os.environ.get("PYTHONPATH")]))
