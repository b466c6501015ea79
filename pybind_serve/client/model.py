"""What a client reads about a model: its KServe v2 metadata (tensor names, datatypes, shapes: every server has
it) and Triton's model config (``max_batch_size``, decoupled: the ``model_configuration`` extension), from the
JSON documents REST answers with; the gRPC codec turns its messages into the same documents first.

>>> document = {"name": "m", "max_batch_size": 8, "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [2]}]}
>>> config = config_from_document(document, "model 'm'")
>>> config.batching, config.inputs[0]
(True, Tensor(name='x', dtype=dtype('float32'), shape=(2,), optional=False))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..dtypes import BYTES, from_datatype
from ..errors import ConfigurationError, InferenceError, InternalServerError, UnsupportedError
from ..tensor import Tensor

__all__ = ["ModelMetadata", "RemoteModelConfig", "TensorMetadata", "config_from_document", "metadata_from_document"]


@dataclass(frozen=True)
class TensorMetadata:
    """An input or output as model metadata gives it: ``shape`` with -1 for any size (the batch dim too)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelMetadata:
    """A model's KServe v2 metadata (``GET /v2/models/{name}``, gRPC ``ModelMetadata``)."""

    name: str
    inputs: tuple[TensorMetadata, ...]
    outputs: tuple[TensorMetadata, ...]
    versions: tuple[str, ...] = ()
    platform: str = ""


@dataclass(frozen=True)
class RemoteModelConfig:
    """A served model's config, as Triton's ``/config`` document (kept whole in ``document``) gives it.

    ``inputs`` and ``outputs`` are `Tensor` specs whose shapes leave out the batch dim when the model batches
    (``max_batch_size`` > 0), as in `Serve.bind`.
    """

    name: str
    max_batch_size: int
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    decoupled: bool = False
    document: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def batching(self) -> bool:
        """Whether the first dim of every tensor is the batch dim."""
        return self.max_batch_size > 0


def metadata_from_document(document: Any, label: str) -> ModelMetadata:
    """The metadata of a model metadata document; `InternalServerError` for one that is not."""
    try:
        return ModelMetadata(
            name=str(document["name"]),
            inputs=tuple(_tensor_metadata(entry) for entry in document.get("inputs") or ()),
            outputs=tuple(_tensor_metadata(entry) for entry in document.get("outputs") or ()),
            versions=tuple(str(v) for v in document.get("versions") or ()),
            platform=str(document.get("platform", "")),
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise malformed(f"metadata of {label} without tensor names, datatypes and shapes", document) from None


def _tensor_metadata(entry: Mapping[str, Any]) -> TensorMetadata:
    return TensorMetadata(str(entry["name"]), str(entry["datatype"]), tuple(int(d) for d in entry["shape"]))


def config_from_document(document: Any, label: str) -> RemoteModelConfig:
    """The config of a Triton model config document (``dims`` as ints or, from protobuf JSON, strings)."""
    try:
        name, max_batch_size = str(document["name"]), int(document.get("max_batch_size") or 0)
        entries = (document.get("input") or (), document.get("output") or ())
        decoupled = bool((document.get("model_transaction_policy") or {}).get("decoupled", False))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise malformed(f"a config of {label} without name or max_batch_size", document) from None
    inputs, outputs = (tuple(_tensor(entry, label) for entry in kind) for kind in entries)
    return RemoteModelConfig(name, max_batch_size, inputs, outputs, decoupled, document)


def _tensor(entry: Any, label: str) -> Tensor:
    try:
        name, config_type = str(entry["name"]), str(entry["data_type"])
        dims = tuple(int(d) for d in entry.get("dims") or ())
        optional = bool(entry.get("optional", False))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise malformed(f"a tensor of {label} without name, data_type or dims", entry) from None
    datatype = BYTES if config_type == "TYPE_STRING" else config_type.removeprefix("TYPE_")
    try:
        return Tensor(name, from_datatype(datatype), dims, optional)
    except (InferenceError, ConfigurationError) as exc:
        raise UnsupportedError(f"tensor {name!r} of {label} ({config_type}, dims {list(dims)}): {exc}") from None


def malformed(what: str, document: Any = None) -> InternalServerError:
    """The error for an answer a client cannot read: the server sent something no KServe v2 server sends."""
    if document is None:
        return InternalServerError(f"the server sent {what}")
    shown = repr(document)
    return InternalServerError(f"the server sent {what}: {shown[:200]}{'...' if len(shown) > 200 else ''}")
