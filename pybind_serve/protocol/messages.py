"""The internal objects the fronts, the scheduler and the workers exchange, independent of the wire format."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..config import DynamicBatcher, ModelConfig, QueuePolicy
from ..dtypes import from_datatype
from ..tensor import Tensor
from .shared_memory import SharedOutput

__all__ = ["InferRequest", "ModelSpec", "RequestedOutput"]


@dataclass(frozen=True)
class ModelSpec:
    """Everything the front knows of one bound model version."""

    name: str
    version: int
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    config: ModelConfig
    strict: bool = False
    threads: int = 1  # worker threads in the binding process (one per function bound), without instances/devices

    @property
    def instance_count(self) -> int:
        """How many workers serve the model: one per device and instance (``devices`` resolved), ``instances``
        processes, or one thread per function bound."""
        config = self.config
        if isinstance(config.devices, tuple):
            return len(config.devices) * (config.instances or 1)
        if isinstance(config.devices, int):
            return config.devices * (config.instances or 1)
        return config.instances or self.threads

    @property
    def label(self) -> str:
        """How errors name this model: ``model 'add_sub' v1``."""
        return f"model {self.name!r} v{self.version}"

    def to_wire(self) -> dict[str, Any]:
        """A JSON-able form, to hand the spec to the front process (`from_wire` reverses it)."""
        return {
            "name": self.name,
            "version": self.version,
            "inputs": [_tensor_to_wire(t) for t in self.inputs],
            "outputs": [_tensor_to_wire(t) for t in self.outputs],
            "config": _config_to_wire(self.config),
            "strict": self.strict,
            "threads": self.threads,
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> ModelSpec:
        return cls(
            name=data["name"],
            version=data["version"],
            inputs=tuple(_tensor_from_wire(t) for t in data["inputs"]),
            outputs=tuple(_tensor_from_wire(t) for t in data["outputs"]),
            config=_config_from_wire(data["config"]),
            strict=data["strict"],
            threads=data["threads"],
        )


@dataclass(frozen=True)
class RequestedOutput:
    """An output the client asked for by name; ``binary`` None = the request's default; ``shared``: the window
    of a registered shared-memory region to write it into (then the response carries no data for it)."""

    name: str
    binary: bool | None = None
    shared: SharedOutput | None = None


@dataclass
class InferRequest:
    """One parsed and validated inference request.

    ``inputs`` hold arrays with the batch dim first when the model batches (``rows`` is that dim, 1 when
    it does not batch). ``parameters`` are the custom request parameters passed to the function;
    ``priority`` and ``timeout_us`` (0 = not given) are taken out of them.
    """

    model: str
    version: int
    inputs: dict[str, np.ndarray]
    rows: int = 1
    id: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    timeout_us: int = 0
    outputs: tuple[RequestedOutput, ...] | None = None
    binary_output: bool = False

    def shape_key(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
        """Requests may share a batch only when their inputs agree on everything but the batch dim."""
        return tuple((name, array.shape[1:]) for name, array in sorted(self.inputs.items()))


def _tensor_to_wire(tensor: Tensor) -> dict[str, Any]:
    return {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.shape), "optional": tensor.optional}


def _tensor_from_wire(data: dict[str, Any]) -> Tensor:
    return Tensor(data["name"], from_datatype(data["datatype"]), tuple(data["shape"]), data["optional"])


def _policy_to_wire(policy: QueuePolicy) -> dict[str, Any]:
    return {**asdict(policy), "timeout_action": policy.timeout_action.value}


def _config_to_wire(config: ModelConfig) -> dict[str, Any]:
    batcher = config.batcher
    return {
        "batching": config.batching,
        "max_batch_size": config.max_batch_size,
        "decoupled": config.decoupled,
        "instances": config.instances,
        "execution_timeout_s": config.execution_timeout_s,
        "concurrency": config.concurrency,
        "devices": list(config.devices) if isinstance(config.devices, tuple) else config.devices,
        "batcher": {
            "max_queue_delay_us": batcher.max_queue_delay_us,
            "preferred_batch_sizes": list(batcher.preferred_batch_sizes),
            "priority_levels": batcher.priority_levels,
            "default_priority_level": batcher.default_priority_level,
            "default_queue_policy": _policy_to_wire(batcher.default_queue_policy),
            "priority_queue_policies": {str(k): _policy_to_wire(v) for k, v in batcher.priority_queue_policies.items()},
            "preserve_ordering": batcher.preserve_ordering,
        },
    }


def _config_from_wire(data: dict[str, Any]) -> ModelConfig:
    batcher = dict(data["batcher"])
    batcher["preferred_batch_sizes"] = tuple(batcher["preferred_batch_sizes"])
    batcher["default_queue_policy"] = QueuePolicy(**batcher["default_queue_policy"])
    batcher["priority_queue_policies"] = {
        int(k): QueuePolicy(**v) for k, v in batcher["priority_queue_policies"].items()
    }
    return ModelConfig(
        batching=data["batching"],
        max_batch_size=data["max_batch_size"],
        decoupled=data["decoupled"],
        instances=data["instances"],
        execution_timeout_s=data["execution_timeout_s"],
        concurrency=data["concurrency"],
        devices=data["devices"],
        batcher=DynamicBatcher(**batcher),
    )
