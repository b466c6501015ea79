"""PyTriton's constants (``pytriton.constants``) that user code reads."""

from __future__ import annotations

import os
import pathlib

DEFAULT_HTTP_PORT = 8000
DEFAULT_GRPC_PORT = 8001
DEFAULT_METRICS_PORT = 8002
TRITON_LOCAL_IP = "127.0.0.1"
TRITON_CONTEXT_FIELD_NAME = "triton_context"
DEFAULT_TRITON_STARTUP_TIMEOUT_S = 120
CREATE_TRITON_CLIENT_TIMEOUT_S = 10
PYTRITON_HOME = pathlib.Path(
    os.path.expanduser(os.getenv("PYTRITON_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "pytriton")))
).resolve()
