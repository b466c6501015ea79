"""pybind_serve: serve a Python function over the KServe v2 / Triton inference protocol, with dynamic batching."""

from .config import DynamicBatcher, ModelConfig, QueuePolicy, TimeoutAction
from .errors import ConfigurationError, ServeError
from .request import Request
from .tensor import Tensor

__all__ = [
    "ConfigurationError",
    "DynamicBatcher",
    "ModelConfig",
    "QueuePolicy",
    "Request",
    "ServeError",
    "Tensor",
    "TimeoutAction",
]

__version__ = "0.1.0.dev0"
