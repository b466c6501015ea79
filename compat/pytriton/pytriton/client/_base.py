"""What the shim's model clients share: PyTriton's constructor arguments and their defaults, mapped onto the
arguments of a `pybind_serve.client` client, and the checks PyTriton makes of a call's arguments and of the
model before it sends anything."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from ..model_config.triton_model_config import TritonModelConfig
from ._translate import pytriton_errors
from .exceptions import (
    PyTritonClientClosedError,
    PyTritonClientInferenceServerError,
    PyTritonClientModelDoesntSupportBatchingError,
    PyTritonClientValueError,
)
from .utils import _DEFAULT_WAIT_FOR_MODEL_TIMEOUT_S, TritonUrl

__all__ = [
    "DEFAULT_INFERENCE_TIMEOUT_S",
    "DEFAULT_INIT_TIMEOUT_S",
    "STREAM_TIME_LIMIT_S",
    "BaseModelClient",
    "check_batching",
    "check_inputs",
    "check_model_kind",
    "check_parameters",
    "header_strings",
]

DEFAULT_INIT_TIMEOUT_S = _DEFAULT_WAIT_FOR_MODEL_TIMEOUT_S  # waiting for the server and the model: 300 s
DEFAULT_INFERENCE_TIMEOUT_S = 60.0  # each request
# The time limit of a whole stream of a decoupled model. PyTriton bounds no stream: its blocking client waits for
# each response without a limit, its asyncio client bounds the wait for each response (with inference_timeout_s),
# not the stream; pybind_serve bounds the whole call, so a stream gets a limit no real stream reaches.
STREAM_TIME_LIMIT_S = 365 * 24 * 3600.0

Client = TypeVar("Client", bound="BaseModelClient")


class BaseModelClient:
    """A PyTriton client of one model: its settings, and the `pybind_serve.client` client it calls through.

    ``init_timeout_s`` (300 s by default) bounds the wait for the server and the model to be ready (before the
    first call, or at once when ``lazy_init`` is False); ``inference_timeout_s`` (60 s) each request. A
    ``model_config`` given is used instead of the server's; with ``ensure_model_is_ready=False`` too, the first
    call does not wait for the model.
    """

    def __init__(
        self,
        url: str,
        model_name: str,
        model_version: str | None = None,
        *,
        lazy_init: bool = True,
        init_timeout_s: float | None = None,
        inference_timeout_s: float | None = None,
        model_config: TritonModelConfig | None = None,
        ensure_model_is_ready: bool = True,
        access_token: str | None = None,
    ) -> None:
        self._triton_url = TritonUrl.from_url(url)
        self._url = self._triton_url.with_scheme
        self._model_name = model_name
        self._model_version = model_version
        self._init_timeout_s = DEFAULT_INIT_TIMEOUT_S if init_timeout_s is None else init_timeout_s
        self._inference_timeout_s = DEFAULT_INFERENCE_TIMEOUT_S if inference_timeout_s is None else inference_timeout_s
        self._access_token = access_token
        self._lazy_init = lazy_init
        self._model_config = model_config
        # True: the first call need not wait for the model (a config was given, with ensure_model_is_ready=False)
        self._model_ready = model_config is not None and not ensure_model_is_ready
        self._closed = False
        with pytriton_errors():
            self._client = self._open()

    @classmethod
    def from_existing_client(cls: type[Client], existing_client: BaseModelClient) -> Client:
        """A new client of the same model, server and settings, with the model config that ``existing_client``
        read (so it neither reads it again nor waits for the model)."""
        return cls(
            existing_client._url,
            existing_client._model_name,
            existing_client._model_version,
            init_timeout_s=existing_client._init_timeout_s,
            inference_timeout_s=existing_client._inference_timeout_s,
            model_config=existing_client._model_config,
            ensure_model_is_ready=False,
            access_token=existing_client._access_token,
        )

    def _open(self) -> Any:
        """The `pybind_serve.client` client to call through."""
        raise NotImplementedError

    def _client_arguments(self) -> dict[str, Any]:
        """The keyword arguments of the `pybind_serve.client` client, from PyTriton's."""
        return {
            "version": self._model_version,
            "timeout_s": self._inference_timeout_s,
            "access_token": self._access_token,
        }

    def _check_open(self) -> None:
        if self._closed:
            raise PyTritonClientClosedError(f"{type(self).__name__} of model {self._model_name!r} is closed")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of model {self._model_name!r} at {self._url}>"


def check_inputs(inputs: tuple[Any, ...], named_inputs: Mapping[str, Any]) -> None:
    """PyTriton's rule: inputs come all positionally or all by name, and at least one."""
    if not inputs and not named_inputs:
        raise PyTritonClientValueError("No inputs given: pass them positionally or by name")
    if inputs and named_inputs:
        raise PyTritonClientValueError("Pass the inputs either positionally or by name, not both")


def check_parameters(values: Mapping[str, Any] | None, what: str) -> None:
    """PyTriton's rule for ``parameters`` and ``headers``: a mapping of str to str, int or bool."""
    if values is None:
        return
    if not isinstance(values, Mapping):
        raise PyTritonClientValueError(f"{what} must be a dict, got {type(values).__name__}")
    for key, value in values.items():
        if not isinstance(key, str):
            raise PyTritonClientValueError(f"{what}: key {key!r} is not a string")
        if not isinstance(value, (str, int, bool)):
            raise PyTritonClientValueError(f"{what}: value of {key!r} must be a string, an integer or a boolean")


def header_strings(headers: Mapping[str, Any] | None) -> dict[str, str] | None:
    """Headers as they travel: every value a string."""
    return None if headers is None else {key: str(value) for key, value in headers.items()}


def check_batching(config: TritonModelConfig) -> None:
    """``infer_batch`` needs a model that batches."""
    if config.max_batch_size <= 0:
        raise PyTritonClientModelDoesntSupportBatchingError(
            f"Model {config.model_name} does not batch (max_batch_size 0): call infer_sample instead"
        )


def check_model_kind(config: TritonModelConfig, *, decoupled_client: bool) -> None:
    """A decoupled model needs a decoupled client, and a decoupled client a decoupled model."""
    if config.decoupled and not decoupled_client:
        raise PyTritonClientInferenceServerError(
            f"Model {config.model_name} is decoupled: call it with DecoupledModelClient or AsyncioDecoupledModelClient"
        )
    if decoupled_client and not config.decoupled:
        raise PyTritonClientInferenceServerError(
            f"Model {config.model_name} is not decoupled: call it with ModelClient or AsyncioModelClient"
        )
