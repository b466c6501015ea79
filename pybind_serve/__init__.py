"""pybind_serve: serve a Python function over the KServe v2 / Triton inference protocol, with dynamic batching.

>>> import pybind_serve, sys
>>> "torch" in sys.modules
False
"""

from .autoscale import Autoscale
from .cluster import RayBackend
from .config import DynamicBatcher, ModelConfig, QueuePolicy, TimeoutAction
from .context import WorkerContext, worker_context
from .decorators import (
    ConstantPadder,
    batch,
    fill_optionals,
    first_value,
    group_by_keys,
    group_by_values,
    pad_batch,
    sample,
)
from .errors import (
    ConfigurationError,
    InferenceError,
    InvalidInputError,
    ModelExecutionError,
    PortInUseError,
    ServeError,
    StartupError,
)
from .remote import RemoteServe
from .request import STREAM_END, Request
from .resources import Resources
from .security import Restriction
from .serve import Serve
from .tensor import Tensor
from .tracing import Tracing
from .version import __version__
from .vertex_ai import VertexAI
from .warmup import Warmup, WarmupInput

__all__ = [
    "STREAM_END",
    "Autoscale",
    "ConfigurationError",
    "ConstantPadder",
    "DynamicBatcher",
    "InferenceError",
    "InvalidInputError",
    "ModelConfig",
    "ModelExecutionError",
    "PortInUseError",
    "QueuePolicy",
    "RayBackend",
    "RemoteServe",
    "Request",
    "Resources",
    "Restriction",
    "Serve",
    "ServeError",
    "StartupError",
    "Tensor",
    "TimeoutAction",
    "Tracing",
    "VertexAI",
    "Warmup",
    "WarmupInput",
    "WorkerContext",
    "__version__",
    "batch",
    "fill_optionals",
    "first_value",
    "group_by_keys",
    "group_by_values",
    "pad_batch",
    "sample",
    "worker_context",
]
