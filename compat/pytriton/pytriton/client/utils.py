"""PyTriton's client utilities (``pytriton.client.utils``): URL parsing, and the helpers that wait for a server or
a model, read a model's config or state, through a ``tritonclient`` client as PyTriton's do.

`TritonUrl` parses URLs with `pybind_serve.client`'s rules (a bare ``host:port`` is HTTP; without a port, 8000
for HTTP and 8001 for gRPC). `create_client_from_url` returns a ``tritonclient.http`` or ``tritonclient.grpc``
``InferenceServerClient``, so the helpers here take one; tritonclient is imported only when they are called.

>>> url = TritonUrl.from_url("grpc://localhost")
>>> url.scheme, url.hostname, url.port, url.with_scheme, url.without_scheme
('grpc', 'localhost', 8001, 'grpc://localhost:8001', 'localhost:8001')
>>> TritonUrl.from_url("localhost:9000").with_scheme
'http://localhost:9000'
"""

from __future__ import annotations

import dataclasses
import enum
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pybind_serve.client.model import config_from_document
from pybind_serve.client.url import parse_url
from pybind_serve.errors import ConfigurationError

from ..model_config.triton_model_config import TritonModelConfig
from ._model_config import triton_model_config
from ._translate import pytriton_errors
from .exceptions import PyTritonClientInvalidUrlError, PyTritonClientTimeoutError
from .warnings import NotSupportedTimeoutWarning

__all__ = [
    "LATEST_MODEL_VERSION",
    "ModelState",
    "TritonUrl",
    "create_client_from_url",
    "get_model_config",
    "get_model_state",
    "wait_for_model_ready",
    "wait_for_server_ready",
]

_DEFAULT_NETWORK_TIMEOUT_S = 60.0
_DEFAULT_WAIT_FOR_SERVER_READY_TIMEOUT_S = 60.0
_DEFAULT_WAIT_FOR_MODEL_TIMEOUT_S = 300.0
_FIRST_POLL_S, _MAX_POLL_S = 0.05, 1.0  # readiness polls back off from the first to the second

LATEST_MODEL_VERSION = "<latest>"  # how messages name the version when none was asked for


class ModelState(enum.Enum):
    """A model version's state in the server's repository index."""

    LOADING = "LOADING"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"
    READY = "READY"


@dataclasses.dataclass
class TritonUrl:
    """A server's URL: ``scheme`` (``http`` or ``grpc``), ``hostname`` and ``port``."""

    scheme: str
    hostname: str
    port: int

    @classmethod
    def from_url(cls, url: str) -> TritonUrl:
        """Parse ``url``; `PyTritonClientInvalidUrlError` for one that is not ``[http|grpc://]host[:port]``."""
        if not isinstance(url, str):
            raise PyTritonClientInvalidUrlError(f"Invalid url {url!r}: it must be a string")
        try:
            endpoint = parse_url(url)
        except ConfigurationError as error:
            raise PyTritonClientInvalidUrlError(f"Invalid url {url!r}: {error}") from error
        if endpoint.tls is not None:
            raise PyTritonClientInvalidUrlError(f"Invalid url {url!r}: only http:// and grpc:// are supported")
        return cls(endpoint.scheme, endpoint.host, endpoint.port)

    @property
    def with_scheme(self) -> str:
        """``scheme://host:port``."""
        return f"{self.scheme}://{self.without_scheme}"

    @property
    def without_scheme(self) -> str:
        """``host:port`` (an IPv6 host in brackets), as tritonclient takes it."""
        host = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        return f"{host}:{self.port}"


def create_client_from_url(url: str, network_timeout_s: float | None = None) -> Any:
    """A ``tritonclient.http`` or ``tritonclient.grpc`` ``InferenceServerClient`` for ``url``.

    ``network_timeout_s`` bounds the connection and each request of the HTTP client; tritonclient's gRPC client
    takes no such timeout, so one given for gRPC is ignored with a `NotSupportedTimeoutWarning`.
    """
    triton_url = TritonUrl.from_url(url)
    if triton_url.scheme == "grpc":
        import tritonclient.grpc

        if network_timeout_s is not None:
            warnings.warn(
                f"tritonclient.grpc takes no timeout outside infer: network_timeout_s={network_timeout_s} is ignored",
                NotSupportedTimeoutWarning,
                stacklevel=2,
            )
        return tritonclient.grpc.InferenceServerClient(triton_url.without_scheme)
    import tritonclient.http

    timeouts = {} if network_timeout_s is None else {"connection_timeout": network_timeout_s}
    if network_timeout_s is not None:
        timeouts["network_timeout"] = network_timeout_s
    return tritonclient.http.InferenceServerClient(triton_url.without_scheme, **timeouts)


def wait_for_server_ready(client: Any, timeout_s: float | None = None, headers: dict[str, str] | None = None) -> None:
    """Return once the server of ``client`` (tritonclient's) is live and ready; `PyTritonClientTimeoutError` if
    it is not within ``timeout_s`` (60 s by default). A server that cannot be reached is not ready yet."""
    timeout_s = _DEFAULT_WAIT_FOR_SERVER_READY_TIMEOUT_S if timeout_s is None else timeout_s

    def ready() -> bool:
        return bool(client.is_server_ready(headers=headers)) and bool(client.is_server_live(headers=headers))

    if not _poll(ready, time.monotonic() + timeout_s):
        raise PyTritonClientTimeoutError(f"The server was not ready within timeout_s={timeout_s:g}")


def wait_for_model_ready(
    client: Any,
    model_name: str,
    model_version: str | None = None,
    timeout_s: float | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    """Return once the server is ready and so is the model (its latest version when ``model_version`` is None);
    `PyTritonClientTimeoutError` if not within ``timeout_s`` (300 s by default)."""
    timeout_s = _DEFAULT_WAIT_FOR_MODEL_TIMEOUT_S if timeout_s is None else timeout_s
    deadline = time.monotonic() + timeout_s
    wait_for_server_ready(client, timeout_s=timeout_s, headers=headers)

    def ready() -> bool:
        return bool(client.is_model_ready(model_name, model_version or "", headers=headers))

    if not _poll(ready, deadline):
        raise PyTritonClientTimeoutError(
            f"Model {model_name}/{model_version or LATEST_MODEL_VERSION} was not ready within timeout_s={timeout_s:g}"
        )


def get_model_config(
    client: Any,
    model_name: str,
    model_version: str | None = None,
    timeout_s: float | None = None,
    headers: dict[str, str] | None = None,
) -> TritonModelConfig:
    """The model's config, once it is ready (`wait_for_model_ready`), as a PyTriton `TritonModelConfig`."""
    wait_for_model_ready(client, model_name, model_version, timeout_s=timeout_s, headers=headers)
    if _is_grpc(client):
        document = client.get_model_config(model_name, model_version or "", headers=headers, as_json=True)["config"]
    else:
        document = client.get_model_config(model_name, model_version or "", headers=headers)
    with pytriton_errors():
        return triton_model_config(config_from_document(document, f"model {model_name!r}"))


def get_model_state(
    client: Any, model_name: str, model_version: str | None = None, headers: dict[str, str] | None = None
) -> ModelState:
    """The model's state in the server's repository index (its latest version's when ``model_version`` is None);
    `ModelState.UNAVAILABLE` when the index does not list it."""
    index = client.get_model_repository_index(headers=headers)
    entries = index if isinstance(index, list) else index.models  # HTTP: JSON documents; gRPC: messages
    states = {version: state for name, version, state in _index_entries(entries) if name == model_name}
    if model_version is None:
        if not states:
            return ModelState.UNAVAILABLE
        return states[max(states, key=lambda version: int(version) if version.isdigit() else -1)]
    return states.get(str(model_version), ModelState.UNAVAILABLE)


def _index_entries(entries: Iterable[Any]) -> Iterable[tuple[str, str, ModelState]]:
    for entry in entries:
        name, version, state = (str(_field(entry, key) or "") for key in ("name", "version", "state"))
        if not version:  # a model without a loaded version
            continue
        try:
            yield name, version, ModelState(state) if state else ModelState.LOADING
        except ValueError:  # a state PyTriton does not name
            yield name, version, ModelState.UNAVAILABLE


def _field(entry: Any, key: str) -> Any:
    return entry.get(key) if isinstance(entry, Mapping) else getattr(entry, key, None)


def _is_grpc(client: Any) -> bool:
    return type(client).__module__.startswith("tritonclient.grpc")


def _poll(ready: Callable[[], bool], deadline: float) -> bool:
    """Whether ``ready()`` became true before ``deadline``; errors while asking (a server not up yet) mean no."""
    from tritonclient.utils import InferenceServerException

    delay = _FIRST_POLL_S
    while True:
        try:
            if ready():
                return True
        except (InferenceServerException, OSError):
            pass
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, _MAX_POLL_S)
