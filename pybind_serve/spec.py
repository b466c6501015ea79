"""`ModelSpec`: everything the server knows of one bound model version, and its JSON form for the front."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .autoscale import Autoscale
from .config import DynamicBatcher, ModelConfig, QueuePolicy
from .dtypes import from_datatype
from .resources import Resources
from .tensor import Tensor
from .warmup import Warmup

__all__ = ["ModelSpec"]


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
        "response_cache": config.response_cache,
        "warmup": [warmup.to_wire() for warmup in config.warmup],
        "resources": config.resources.to_wire() if config.resources is not None else None,
        "autoscale": asdict(config.autoscale) if config.autoscale is not None else None,
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
        response_cache=data["response_cache"],
        warmup=tuple(Warmup.from_wire(warmup) for warmup in data["warmup"]),
        resources=Resources.from_wire(data["resources"]) if data.get("resources") else None,
        autoscale=Autoscale(**data["autoscale"]) if data.get("autoscale") else None,
    )
