"""``python -m pybind_serve``: the ``pybind-serve`` command (`pybind_serve.cli`)."""

from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
