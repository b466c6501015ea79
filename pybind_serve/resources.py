"""`Resources`: what one instance of a model asks of a cluster's scheduler (``ModelConfig(resources=...)``).

A cluster backend (`Serve(backend=RayBackend(...))`, docs/scale_out.md) places each instance of a model on a node
that has these free, as Ray places an actor: ``num_cpus``, ``num_gpus`` (fractions share a GPU), ``memory``
(bytes), and ``custom`` resources that nodes declare (``{"node_b": 1}`` forces a node that has ``node_b``). On one
host (no backend) they are not used.

>>> Resources(num_cpus=2, custom={"node_b": 1}).to_wire()
{'num_cpus': 2.0, 'num_gpus': 0.0, 'memory': None, 'custom': {'node_b': 1.0}}
>>> Resources.from_wire(Resources(num_gpus=0.5).to_wire()) == Resources(num_gpus=0.5)
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .errors import ConfigurationError

__all__ = ["Resources"]


def _amount(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < math.inf


@dataclass(frozen=True)
class Resources:
    """The resources one instance of a model needs on a cluster node (Ray's actor options of the same names)."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory: int | None = None  # bytes the scheduler reserves for it; None: no reservation
    custom: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        for name in ("num_cpus", "num_gpus"):
            value = getattr(self, name)
            if not _amount(value):
                problems.append(f"{name} must be a number >= 0, got {value!r}")
            else:
                object.__setattr__(self, name, float(value))
        memory = self.memory
        if memory is not None and (type(memory) is not int or memory < 1):
            problems.append(f"memory must be None or a number of bytes >= 1, got {memory!r}")
        custom = self.custom
        if not isinstance(custom, Mapping):
            problems.append(f"custom must map resource names to amounts, got {custom!r}")
        else:
            bad = {k: v for k, v in custom.items() if not (isinstance(k, str) and k and _amount(v) and v > 0)}
            if bad:
                problems.append(f"custom must map resource names (str) to amounts > 0, got {bad!r}")
            reserved = sorted(set(custom) & {"CPU", "GPU", "memory"})
            if reserved:
                problems.append(f"custom may not name {reserved}: use num_cpus, num_gpus and memory")
        if problems:
            raise ConfigurationError.collect("Resources", problems)
        object.__setattr__(self, "custom", MappingProxyType({k: float(v) for k, v in custom.items()}))

    def __hash__(self) -> int:
        return hash((self.num_cpus, self.num_gpus, self.memory, tuple(sorted(self.custom.items()))))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Resources):
            return NotImplemented
        return self.to_wire() == other.to_wire()

    def to_wire(self) -> dict[str, Any]:
        return {
            "num_cpus": self.num_cpus,
            "num_gpus": self.num_gpus,
            "memory": self.memory,
            "custom": dict(self.custom),
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Resources:
        return cls(data["num_cpus"], data["num_gpus"], data["memory"], data["custom"])
