"""PyTriton's server API (``pytriton.triton``) on pybind_serve: `Triton` is a `pybind_serve.Serve`, `RemoteTriton`
a `pybind_serve.RemoteServe`, and `TritonConfig` / `TritonSecurityConfig` become their arguments.

What each `TritonConfig` field does here is in docs/migrating_from_pytriton.md: most map one to one; Triton
tuning knobs with no meaning on pybind_serve (thread counts, allocation pools, keep-alive pings, ...) are
accepted and ignored, and the few that would change what a client sees if ignored (``model_repository``, gRPC
TLS alone, SageMaker) raise `PyTritonValidationError` saying what to do instead.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import pathlib
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pybind_serve
from pybind_serve.errors import ServeError

from . import decorators
from ._mapping import serve_config, serve_tensors
from .exceptions import PyTritonValidationError, from_serve_error
from .model_config import ModelConfig, Tensor
from .model_config.triton_model_config import TensorSpec, TritonModelConfig

__all__ = [
    "DefaultTritonLifecyclePolicy",
    "RemoteTriton",
    "Triton",
    "TritonConfig",
    "TritonLifecyclePolicy",
    "TritonSecurityConfig",
    "VertextAILifecyclePolicy",
]

LOGGER = logging.getLogger(__name__)

MONITORING_PERIOD_S = 10.0
TRITON_ACCESS_HEADER = "triton-access-token"
VALID_TRITON_ENDPOINTS = frozenset(
    {
        "health",
        "metadata",
        "inference",
        "shared-memory",
        "model-config",
        "model-repository",
        "statistics",
        "trace",
        "logging",
    }
)
DEFAULT_PROTECTED_ENDPOINTS = ["shared-memory", "model-repository", "statistics", "trace", "logging"]
_B = TypeVar("_B", bound="_Binder")
_MODEL_NAME = re.compile(r"^[a-zA-Z0-9._-]+$")
_ENV_PREFIX = "PYTRITON_TRITON_CONFIG_"

# TritonConfig fields that tune Triton's own machinery: accepted, and without effect on pybind_serve.
_IGNORED_FIELDS = (
    "id",
    "exit_on_error",
    "strict_readiness",
    "http_thread_count",
    "grpc_infer_allocation_pool_size",
    "grpc_infer_response_compression_level",
    "grpc_keepalive_time",
    "grpc_keepalive_timeout",
    "grpc_keepalive_permit_without_calls",
    "grpc_http2_max_pings_without_data",
    "grpc_http2_min_recv_ping_interval_without_data",
    "grpc_http2_max_ping_strikes",
    "allow_gpu_metrics",
    "allow_cpu_metrics",
    "metrics_interval_ms",
    "metrics_address",
    "vertex_ai_thread_count",
    "metrics_config",
    "trace_config",
    "cache_directory",
    "buffer_manager_thread_count",
    "log_file",
)


@dataclasses.dataclass(kw_only=True)
class TritonConfig:
    """The server's configuration, with Triton's option names (``None``: the default).

    Also read from ``PYTRITON_TRITON_CONFIG_<FIELD>`` environment variables (`from_env`); explicit values win.

    >>> TritonConfig(http_port=8010, cache_config=["local,size=1048576"]).http_port
    8010
    """

    model_repository: pathlib.Path | None = None
    id: str | None = None
    log_verbose: int | None = None
    log_file: pathlib.Path | None = None
    exit_timeout_secs: int | None = None
    exit_on_error: bool | None = None
    strict_readiness: bool | None = None
    allow_http: bool | None = None
    http_address: str | None = None
    http_port: int | None = None
    http_header_forward_pattern: str | None = None
    http_thread_count: int | None = None
    http_restricted_api: str | None = None
    allow_grpc: bool | None = None
    grpc_address: str | None = None
    grpc_port: int | None = None
    grpc_header_forward_pattern: str | None = None
    grpc_infer_allocation_pool_size: int | None = None
    grpc_use_ssl: bool | None = None
    grpc_use_ssl_mutual: bool | None = None
    grpc_server_cert: pathlib.Path | None = None
    grpc_server_key: pathlib.Path | None = None
    grpc_root_cert: pathlib.Path | None = None
    grpc_infer_response_compression_level: str | None = None
    grpc_keepalive_time: int | None = None
    grpc_keepalive_timeout: int | None = None
    grpc_keepalive_permit_without_calls: bool | None = None
    grpc_http2_max_pings_without_data: int | None = None
    grpc_http2_min_recv_ping_interval_without_data: int | None = None
    grpc_http2_max_ping_strikes: int | None = None
    grpc_restricted_protocol: str | None = None
    allow_metrics: bool | None = None
    allow_gpu_metrics: bool | None = None
    allow_cpu_metrics: bool | None = None
    metrics_interval_ms: int | None = None
    metrics_port: int | None = None
    metrics_address: str | None = None
    allow_sagemaker: bool | None = None
    sagemaker_port: int | None = None
    sagemaker_safe_port_range: str | None = None
    sagemaker_thread_count: int | None = None
    allow_vertex_ai: bool | None = None
    vertex_ai_port: int | None = None
    vertex_ai_thread_count: int | None = None
    vertex_ai_default_model: str | None = None
    metrics_config: list[str] | None = None
    trace_config: list[str] | None = None
    cache_config: list[str] | None = None
    cache_directory: str | None = None
    buffer_manager_thread_count: int | None = None

    def __post_init__(self) -> None:
        if self.allow_http not in (True, None) and self.allow_grpc not in (True, None):
            raise PyTritonValidationError("The `http` or `grpc` endpoint has to be allowed.")

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> TritonConfig:
        """A config from a dict of field names to values (strings are converted); unknown names are logged."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for name in config.keys() - fields.keys():
            LOGGER.warning("Ignoring %s=%s: TritonConfig has no such field", name, config[name])
        return cls(**{name: _cast(fields[name], value) for name, value in config.items() if name in fields})

    @classmethod
    def from_env(cls) -> TritonConfig:
        """A config from ``PYTRITON_TRITON_CONFIG_<FIELD>`` variables; ``<FIELD>_<i>`` fills list fields.

        >>> os.environ["PYTRITON_TRITON_CONFIG_GRPC_PORT"] = "45436"
        >>> TritonConfig.from_env().grpc_port
        45436
        >>> del os.environ["PYTRITON_TRITON_CONFIG_GRPC_PORT"]
        """
        config: dict[str, Any] = {}
        lists: dict[str, dict[int, str]] = {}
        for name, value in os.environ.items():
            if not name.startswith(_ENV_PREFIX):
                continue
            key = name[len(_ENV_PREFIX) :].lower()
            indexed = re.match(r"^(.+?)_(\d+)$", key)
            if indexed:
                lists.setdefault(indexed[1], {})[int(indexed[2])] = value
            else:
                config[key] = value
        for key, items in lists.items():
            config[key] = [items[i] for i in sorted(items)]
        return cls.from_dict(config)


def _cast(field: dataclasses.Field[Any], value: Any) -> Any:
    kind = str(field.type)
    if value is None:
        return None
    if kind.startswith("list"):
        return value.split(",") if isinstance(value, str) else list(value)
    if kind.startswith("bool"):
        return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")
    if kind.startswith("int"):
        return int(value)
    if kind.startswith("pathlib.Path"):
        return pathlib.Path(value)
    return value


@dataclasses.dataclass
class TritonLifecyclePolicy:
    """Kept for PyTriton's signatures: pybind_serve starts its server in `Triton.__enter__` / `run` either way."""

    launch_triton_on_startup: bool = True
    local_model_store: bool = False


DefaultTritonLifecyclePolicy = TritonLifecyclePolicy()
VertextAILifecyclePolicy = TritonLifecyclePolicy(launch_triton_on_startup=False, local_model_store=True)


@dataclasses.dataclass
class TritonSecurityConfig:
    """Token-based access restriction: ``restricted_endpoints`` answer only callers that send the
    ``triton-access-token`` header with ``access_token`` (generated when not given).

    The default protects shared-memory, model-repository, statistics, trace and logging, as PyTriton's does;
    ``restricted_endpoints=[]`` protects nothing.

    >>> config = TritonSecurityConfig()
    >>> len(config.access_token) > 20, config.restricted_endpoints[0]
    (True, 'shared-memory')
    """

    access_token: str | None = None
    restricted_endpoints: list[str] | None = None

    def __post_init__(self) -> None:
        if self.restricted_endpoints is None:
            self.restricted_endpoints = list(DEFAULT_PROTECTED_ENDPOINTS)
        unknown = sorted(set(self.restricted_endpoints) - VALID_TRITON_ENDPOINTS)
        if unknown:
            raise PyTritonValidationError(
                f"Invalid endpoint names: {unknown}. Valid endpoints are: {sorted(VALID_TRITON_ENDPOINTS)}"
            )
        if self.access_token is None and self.restricted_endpoints:
            self.access_token = pybind_serve.security.new_token()


def _restriction(option: str, value: str) -> pybind_serve.Restriction:
    """Triton's ``<groups>:<key>=<value>`` (or ``<groups>,<key>=<value>``) restriction syntax."""
    match = re.match(r"^([a-z,-]+)[:,]([^=,:]+)=(.*)$", value.strip())
    if not match:
        raise PyTritonValidationError(f"{option} must read '<endpoints>:<header>=<value>', got {value!r}")
    groups = tuple(g for g in match[1].split(",") if g)
    return pybind_serve.Restriction(groups, match[2], match[3])


def _cache_bytes(cache_config: list[str] | None) -> int | None:
    """The size of Triton's ``local`` cache, from ``["local,size=<bytes>"]``; None when not configured."""
    if not cache_config:
        return None
    size = None
    for item in cache_config:
        name, _, setting = item.partition(",")
        key, _, value = setting.partition("=")
        if name.strip() != "local":
            raise PyTritonValidationError(f"only Triton's 'local' response cache is available here, got {item!r}")
        if key.strip() == "size":
            size = int(value)
    return size


def serve_arguments(config: TritonConfig, security: TritonSecurityConfig) -> dict[str, Any]:
    """`pybind_serve.Serve`'s keyword arguments for a `TritonConfig` and `TritonSecurityConfig`.

    >>> config = TritonConfig(grpc_port=9001, allow_metrics=False)
    >>> args = serve_arguments(config, TritonSecurityConfig(restricted_endpoints=[]))
    >>> args["http_port"], args["grpc_port"], args["metrics_port"], args["restricted"]
    (8000, 9001, None, [])
    """
    if config.model_repository is not None:
        raise PyTritonValidationError(
            "model_repository: pybind_serve serves Python functions bound with Triton.bind, not a Triton model "
            "repository; serve those models with Triton itself"
        )
    if config.allow_sagemaker:
        raise PyTritonValidationError("allow_sagemaker: SageMaker's routes are not served by pybind_serve")
    if config.grpc_use_ssl or config.grpc_use_ssl_mutual:
        raise PyTritonValidationError(
            "grpc_use_ssl: pybind_serve's TLS covers HTTP and gRPC together; use pybind_serve.Serve(tls_certfile=..., "
            "tls_keyfile=..., tls_client_ca=...) (docs/security.md)"
        )
    for name in _IGNORED_FIELDS:
        if getattr(config, name) is not None:
            LOGGER.debug("TritonConfig.%s has no effect on pybind_serve", name)
    host = config.http_address or config.grpc_address or "0.0.0.0"
    http_port = 8000 if config.http_port is None else config.http_port
    if config.allow_http is False:
        # pybind_serve always serves HTTP (health and control go through it): keep it to this host.
        LOGGER.warning("allow_http=False: HTTP is served on a free port of 127.0.0.1 only")
        http_port = 0
    restricted = []
    if security.access_token and security.restricted_endpoints:
        restricted.append(
            pybind_serve.Restriction(tuple(security.restricted_endpoints), TRITON_ACCESS_HEADER, security.access_token)
        )
    for option in ("http_restricted_api", "grpc_restricted_protocol"):
        value = getattr(config, option)
        if value:
            rule = _restriction(option, value)
            taken = {g for r in restricted for g in r.groups}
            groups = tuple(g for g in rule.groups if g not in taken)
            if groups:
                restricted.append(dataclasses.replace(rule, groups=groups))
    arguments: dict[str, Any] = {
        "host": host,
        "http_port": http_port,
        "grpc_port": None if config.allow_grpc is False else (8001 if config.grpc_port is None else config.grpc_port),
        "metrics_port": (
            None if config.allow_metrics is False else (8002 if config.metrics_port is None else config.metrics_port)
        ),
        "restricted": restricted,
        "http_header_forward_pattern": config.http_header_forward_pattern,
        "grpc_header_forward_pattern": config.grpc_header_forward_pattern,
        "log_level": "debug" if (config.log_verbose or 0) > 0 else "warning",
    }
    if config.exit_timeout_secs is not None:
        arguments["drain_timeout_s"] = float(config.exit_timeout_secs)
    cache = _cache_bytes(config.cache_config)
    if cache is not None:
        arguments["response_cache_bytes"] = cache
    if config.allow_vertex_ai:
        arguments["vertex_ai"] = pybind_serve.VertexAI(
            port=config.vertex_ai_port, default_model=config.vertex_ai_default_model
        )
    return arguments


def _model_config_view(
    name: str,
    version: int,
    inputs: Sequence[pybind_serve.Tensor],
    outputs: Sequence[pybind_serve.Tensor],
    config: ModelConfig,
) -> TritonModelConfig:
    return TritonModelConfig(
        model_name=name,
        model_version=version,
        max_batch_size=config.max_batch_size,
        batching=config.batching,
        batcher=config.batcher,
        decoupled=config.decoupled,
        inputs=[TensorSpec(t.name, t.shape, t.dtype, t.optional) for t in inputs],
        outputs=[TensorSpec(t.name, t.shape, t.dtype) for t in outputs],
        response_cache=config.response_cache or None,
    )


class _Binder:
    """What `Triton` and `RemoteTriton` share: PyTriton's `bind` arguments mapped onto a pybind_serve binder
    (``target``: a `Serve` or a `RemoteServe`), the context manager, and a `stop` that runs once (also at exit)."""

    def __init__(self, target: Any) -> None:
        self._lock = threading.RLock()
        self._models: list[tuple[str, int]] = []
        self._target = target
        self._stopped = False
        atexit.register(self.stop)

    def __enter__(self: _B) -> _B:
        self.connect()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def connect(self) -> None:
        raise NotImplementedError

    def stop(self) -> bool:
        """Stop serving (`Triton`) or unbind this process's models (`RemoteTriton`); True when this call did it."""
        with self._lock:
            if self._stopped:
                return False
            self._stopped = True
        atexit.unregister(self.stop)
        self._target.stop()
        return True

    def bind(
        self,
        model_name: str,
        infer_func: Callable[..., Any] | Sequence[Callable[..., Any]],
        inputs: Sequence[Tensor],
        outputs: Sequence[Tensor],
        model_version: int = 1,
        config: ModelConfig | None = None,
        strict: bool = False,
        trace_config: list[str] | None = None,
    ) -> None:
        """Serve ``infer_func`` (or a list of them: one instance each) as ``model_name``.

        Unnamed inputs and outputs are ``INPUT_1``, ``INPUT_2``, ... and ``OUTPUT_1``, ...
        """
        if not model_name:
            raise PyTritonValidationError("Model name cannot be empty")
        if not _MODEL_NAME.match(model_name):
            raise PyTritonValidationError(
                "Model name can only contain alphanumeric characters, dots, underscores and dashes"
            )
        config = config or ModelConfig()
        serve_inputs, serve_outputs = serve_tensors(inputs, "INPUT"), serve_tensors(outputs, "OUTPUT")
        functions = list(infer_func) if isinstance(infer_func, (list, tuple)) else infer_func
        decorators._BOUND[(model_name, model_version)] = _model_config_view(
            model_name, model_version, serve_inputs, serve_outputs, config
        )
        try:
            self._target.bind(
                model_name,
                functions,
                serve_inputs,
                serve_outputs,
                config=serve_config(config),
                version=model_version,
                strict=strict,
            )
        except ServeError as exc:
            raise from_serve_error(exc) from exc
        with self._lock:
            if (model_name, model_version) not in self._models:
                self._models.append((model_name, model_version))


class Triton(_Binder):
    """A pybind_serve server with PyTriton's API: it starts on ``with Triton() as triton`` (or `run` / `serve`).

    >>> import numpy as np
    >>> from pytriton.decorators import batch
    >>> @batch
    ... def double(x):
    ...     return {"y": x * 2}
    >>> config = TritonConfig(http_port=0, grpc_port=0, metrics_port=0)
    >>> with Triton(config=config) as triton:
    ...     x, y = Tensor(dtype=np.float32, shape=(-1,)), Tensor(name="y", dtype=np.float32, shape=(-1,))
    ...     triton.bind("double", double, [x], [y])
    ...     triton.is_alive()
    True
    """

    def __init__(
        self,
        *,
        config: TritonConfig | None = None,
        workspace: str | pathlib.Path | None = None,
        triton_lifecycle_policy: TritonLifecyclePolicy | None = None,
        security_config: TritonSecurityConfig | None = None,
    ) -> None:
        merged = {k: v for k, v in TritonConfig.from_env().to_dict().items() if v is not None}
        merged.update({k: v for k, v in (config.to_dict() if config else {}).items() if v is not None})
        self._config = TritonConfig(**merged)
        self._security_config = security_config or TritonSecurityConfig()
        try:
            self._serve = pybind_serve.Serve(**serve_arguments(self._config, self._security_config))
        except ServeError as exc:
            raise from_serve_error(exc) from exc
        super().__init__(self._serve)
        self._started = False

    def run(self) -> None:
        """Start serving (if not yet) with every bound model ready, and return."""
        try:
            self._serve.run()
        except ServeError as exc:
            raise from_serve_error(exc) from exc
        self._started = True

    def serve(self, monitoring_period_s: float = MONITORING_PERIOD_S) -> None:
        """Start if needed and block until SIGINT / SIGTERM, then stop."""
        try:
            self._started = True
            self._serve.serve()
        except KeyboardInterrupt:
            LOGGER.info("SIGINT received, exiting.")
        finally:
            self.stop()

    def is_alive(self) -> bool:
        """Whether the server runs with every bound model ready."""
        return self._serve.is_ready()

    def is_connected(self) -> bool:
        """Whether the server was started and not stopped (PyTriton: connected to its Triton)."""
        return self._started and not self._stopped

    def connect(self) -> None:
        """Start serving if not yet (PyTriton: wait for Triton and load the bound models)."""
        self.run()

    def get_access_token(self) -> str | None:
        """The token that restricted endpoints expect in the ``triton-access-token`` header."""
        return self._security_config.access_token

    @property
    def serve_instance(self) -> pybind_serve.Serve:
        """The `pybind_serve.Serve` underneath."""
        return self._serve


class RemoteTriton(_Binder):
    """Bind models into a server that another process of this host started, PyTriton's `RemoteTriton`
    (`pybind_serve.RemoteServe`): the functions run in this process; `stop` unbinds them.
    """

    def __init__(self, url: str, workspace: str | pathlib.Path | None = None, access_token: str | None = None) -> None:
        self._url = url
        self._remote = pybind_serve.RemoteServe(url)
        super().__init__(self._remote)

    def connect(self) -> None:
        """Attach to the server and load the models bound so far."""
        try:
            self._remote.connect()
        except ServeError as exc:
            raise from_serve_error(exc) from exc

    def is_connected(self) -> bool:
        """Whether this process is attached to the server."""
        return bool(self._remote.is_connected())

    def is_alive(self) -> bool:
        """Whether every model bound here is served (none bound: True)."""
        with self._lock:
            if not self._models:
                return True
        return bool(self._remote.is_connected())

    def serve(self, monitoring_period_s: float = MONITORING_PERIOD_S) -> None:
        """Connect and block until SIGINT / SIGTERM or the server stops, then unbind this process's models."""
        try:
            self._remote.serve()
        except ServeError as exc:
            raise from_serve_error(exc) from exc
        except KeyboardInterrupt:
            LOGGER.info("SIGINT received, exiting.")
        finally:
            self.stop()
