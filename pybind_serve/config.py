"""Model configuration: `ModelConfig`, `DynamicBatcher`, `QueuePolicy` (Triton's semantics, validated when built)."""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .autoscale import Autoscale
from .errors import ConfigurationError
from .placement import normalize_devices
from .resources import Resources
from .warmup import Warmup

__all__ = ["DynamicBatcher", "ModelConfig", "QueuePolicy", "TimeoutAction"]


class TimeoutAction(str, enum.Enum):
    """What happens to a request whose queue timeout expires before it reaches the model."""

    REJECT = "REJECT"  #: answered at once with an `InferenceTimeoutError`
    DELAY = "DELAY"  #: kept, but scheduled after the requests of its level (and higher) that have not timed out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _non_negative_int(problems: list[str], name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        problems.append(f"{name} must be an int >= 0, got {value!r}")


@dataclass(frozen=True)
class QueuePolicy:
    """How one priority level's queue treats timeouts and overflow.

    ``default_timeout_us=0`` means no timeout. With ``allow_timeout_override`` a request's ``timeout``
    parameter (µs) applies; it may only shorten a non-zero default. Unlike Triton (where the override is off
    by default) it is on here: a per-request timeout that is silently ignored surprises everyone.
    ``max_queue_size=0`` means unbounded; a request that finds the queue full is rejected at once.

    >>> QueuePolicy(timeout_action=TimeoutAction.DELAY, default_timeout_us=5_000).timeout_action
    <TimeoutAction.DELAY: 'DELAY'>
    """

    timeout_action: TimeoutAction = TimeoutAction.REJECT
    default_timeout_us: int = 0
    allow_timeout_override: bool = True
    max_queue_size: int = 0

    def __post_init__(self) -> None:
        problems: list[str] = []
        try:
            object.__setattr__(self, "timeout_action", TimeoutAction(self.timeout_action))
        except ValueError:
            problems.append(f"timeout_action must be REJECT or DELAY, got {self.timeout_action!r}")
        _non_negative_int(problems, "default_timeout_us", self.default_timeout_us)
        _non_negative_int(problems, "max_queue_size", self.max_queue_size)
        if not isinstance(self.allow_timeout_override, bool):
            problems.append(f"allow_timeout_override must be a bool, got {self.allow_timeout_override!r}")
        if problems:
            raise ConfigurationError.collect("QueuePolicy", problems)

    def timeout_us(self, requested_us: int) -> int:
        """The queue timeout of a request that asked for ``requested_us`` (0 = did not ask); 0 = none.

        >>> QueuePolicy(default_timeout_us=100).timeout_us(50), QueuePolicy(default_timeout_us=100).timeout_us(500)
        (50, 100)
        """
        if not self.allow_timeout_override or requested_us <= 0:
            return self.default_timeout_us
        if self.default_timeout_us == 0:
            return requested_us
        return min(requested_us, self.default_timeout_us)


@dataclass(frozen=True)
class DynamicBatcher:
    """How requests are grouped into batches (Triton's ``dynamic_batching``).

    - ``max_queue_delay_us``: how long the oldest request may wait for others to join its batch (0 = send
      what is queued as soon as a worker is free).
    - ``preferred_batch_sizes``: sizes to cut a batch at when more requests than that are queued.
    - ``priority_levels``: number of levels (1 = highest); 0 disables priorities. ``default_priority_level``
      is the level of requests that give no ``priority``; 0 means the lowest level.
    - ``default_queue_policy`` / ``priority_queue_policies``: `QueuePolicy` for all levels / per level.
    - ``preserve_ordering``: answer requests in the order they arrived.

    >>> DynamicBatcher(priority_levels=2).default_priority_level
    2
    """

    max_queue_delay_us: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()
    priority_levels: int = 0
    default_priority_level: int = 0
    default_queue_policy: QueuePolicy = field(default_factory=QueuePolicy)
    priority_queue_policies: Mapping[int, QueuePolicy] = field(default_factory=dict)
    preserve_ordering: bool = False

    def __post_init__(self) -> None:
        problems: list[str] = []
        _non_negative_int(problems, "max_queue_delay_us", self.max_queue_delay_us)
        sizes = self.preferred_batch_sizes
        sizes = tuple(sizes) if isinstance(sizes, Iterable) and not isinstance(sizes, (str, bytes)) else sizes
        if not isinstance(sizes, tuple) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes
        ):
            problems.append(f"preferred_batch_sizes must be positive ints, got {sizes!r}")
        else:
            object.__setattr__(self, "preferred_batch_sizes", tuple(sorted(set(sizes))))
        _non_negative_int(problems, "priority_levels", self.priority_levels)
        _non_negative_int(problems, "default_priority_level", self.default_priority_level)
        problems.extend(self._check_priorities())
        if not isinstance(self.default_queue_policy, QueuePolicy):
            problems.append(f"default_queue_policy must be a QueuePolicy, got {self.default_queue_policy!r}")
        if not isinstance(self.preserve_ordering, bool):
            problems.append(f"preserve_ordering must be a bool, got {self.preserve_ordering!r}")
        if problems:
            raise ConfigurationError.collect("DynamicBatcher", problems)
        object.__setattr__(self, "priority_queue_policies", MappingProxyType(dict(self.priority_queue_policies)))

    def _check_priorities(self) -> list[str]:
        levels, default = self.priority_levels, self.default_priority_level
        if not isinstance(levels, int) or not isinstance(default, int):
            return []
        problems = []
        if not isinstance(self.priority_queue_policies, Mapping):
            return [
                f"priority_queue_policies must map priority levels to QueuePolicy, got {self.priority_queue_policies!r}"
            ]
        if levels and default == 0:
            object.__setattr__(self, "default_priority_level", levels)
        elif default > levels:
            problems.append(f"default_priority_level must be in 1..{levels} (priority_levels), got {default}")
        for level, policy in dict(self.priority_queue_policies).items():
            if not isinstance(level, int) or isinstance(level, bool) or not 1 <= level <= levels:
                problems.append(f"priority_queue_policies key {level!r} must be a level in 1..{levels}")
            if not isinstance(policy, QueuePolicy):
                problems.append(f"priority_queue_policies[{level!r}] must be a QueuePolicy, got {policy!r}")
        return problems

    def queue_policy(self, level: int) -> QueuePolicy:
        """The `QueuePolicy` of a priority level (the default policy where none is given)."""
        return self.priority_queue_policies.get(level, self.default_queue_policy)

    def level_of(self, priority: int) -> int:
        """The queue level of a request's ``priority`` parameter (0 = default); levels start at 1.

        Out-of-range priorities are clamped, as Triton does, so 1 is the highest and ``priority_levels`` the lowest.
        """
        if self.priority_levels == 0:
            return 1
        if priority <= 0:
            return self.default_priority_level
        return min(priority, self.priority_levels)


@dataclass(frozen=True)
class ModelConfig:
    """How a bound model is batched and run.

    - ``batching``: the first dim of every tensor is the batch dim (specs omit it); False serves one
      request per call with shapes exactly as declared.
    - ``max_batch_size``: the most rows one call receives; a larger request is rejected.
    - ``batcher``: the `DynamicBatcher`.
    - ``decoupled``: the function may answer each request with zero, one or many responses (streaming).
    - ``instances``: ``None`` (default) runs the function in the process that called ``bind`` (a model
      loaded in a notebook is served as is); ``N`` starts N worker processes, each running its own copy
      (forked from the binding process), for CPU parallelism beyond the GIL. With ``devices``: instances on
      each device (Triton's ``instance_group`` count), 1 by default.
    - ``devices``: where the instances run, each in a worker process of its own: ``"all"`` (every GPU this
      process sees), a number of GPUs (the first ones), or a list of ``"cuda:<i>"`` and ``"cpu"``. A GPU worker
      sees only its GPU, as ``cuda:0`` (``CUDA_VISIBLE_DEVICES``), and is started fresh (not forked), so the
      binding process may use CUDA itself. Asking for GPUs the host does not have is a `ConfigurationError` at
      ``bind``. Under a cluster backend (``Serve(backend=RayBackend(...))``) the GPUs are the cluster's, counted
      when the model is loaded, and the cluster's scheduler chooses which. See docs/gpu.md.
    - ``concurrency``: how many batches one worker runs at once when the function is ``async def`` (default 1:
      one after the other). An I/O-bound async function (calling another service) then overlaps its waits;
      each batch keeps its execution timeout and its cancellation. A plain function runs one batch at a time
      whatever this says, and so does a decoupled (streaming) model.
    - ``execution_timeout_s``: how long the function may take over one batch (for a decoupled model: between
      two of its responses) before that batch's requests fail with `ExecutionTimeoutError` (HTTP 504, gRPC
      DEADLINE_EXCEEDED); ``None`` (default) waits as long as it takes. A worker process (or a cluster backend's
      actor) that timed out is killed and replaced; a function running in the binding process
      (``instances=None``) cannot be stopped, so the model is reported not ready until it returns (see
      docs/limits.md).
    - ``response_cache``: answer a request identical to an earlier one (same model version, inputs' names,
      datatypes, shapes and bytes, and custom parameters) from the front's cache without running the function
      (Triton's ``response_cache``); the cache's size is ``Serve(response_cache_bytes=...)``. Not for a
      decoupled model. See docs/response_cache_and_warmup.md.
    - ``warmup``: `Warmup` samples that each instance runs before it reports ready (Triton's ``model_warmup``);
      ``bind`` / ``run`` return after them, and fail with `StartupError` if one raises.
    - ``resources``: what each instance needs from a cluster's scheduler (`Resources`: CPUs, GPUs, memory, custom
      resources) when a cluster backend runs the workers (``Serve(backend=RayBackend(...))``, docs/scale_out.md);
      None: one CPU each. Not used on one host.
    - ``autoscale``: an `Autoscale`: the instance count follows the queue between its ``min_instances`` and
      ``max_instances`` (starting at ``instances``, or its minimum), under a cluster backend (docs/scale_out.md).

    >>> ModelConfig(max_batch_size=64, batcher=DynamicBatcher(max_queue_delay_us=500)).max_batch_size
    64
    """

    batching: bool = True
    max_batch_size: int = 16
    batcher: DynamicBatcher = field(default_factory=DynamicBatcher)
    decoupled: bool = False
    instances: int | None = None
    concurrency: int = 1
    execution_timeout_s: float | None = None
    devices: str | int | Sequence[str] | None = None
    response_cache: bool = False
    warmup: Sequence[Warmup] = ()
    resources: Resources | None = None
    autoscale: Autoscale | None = None

    def __post_init__(self) -> None:
        problems: list[str] = []
        for name in ("batching", "decoupled", "response_cache"):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"{name} must be a bool, got {getattr(self, name)!r}")
        size = self.max_batch_size
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            problems.append(f"max_batch_size must be an int >= 1, got {size!r}")
        elif isinstance(self.batcher, DynamicBatcher):
            too_big = [s for s in self.batcher.preferred_batch_sizes if s > size]
            if too_big and self.batching:
                problems.append(f"preferred_batch_sizes {too_big} exceed max_batch_size {size}")
        if not isinstance(self.batcher, DynamicBatcher):
            problems.append(f"batcher must be a DynamicBatcher, got {self.batcher!r}")
        inst = self.instances
        if inst is not None and (not isinstance(inst, int) or isinstance(inst, bool) or inst < 1):
            problems.append(f"instances must be None (run in the binding process) or an int >= 1, got {inst!r}")
        try:
            object.__setattr__(self, "devices", normalize_devices(self.devices))
        except ConfigurationError as exc:
            problems.append(str(exc))
        if not isinstance(self.concurrency, int) or isinstance(self.concurrency, bool) or self.concurrency < 1:
            problems.append(f"concurrency must be an int >= 1 (batches at once per worker), got {self.concurrency!r}")
        timeout = self.execution_timeout_s
        if timeout is not None and not (_is_number(timeout) and 0 < timeout < math.inf):
            problems.append(f"execution_timeout_s must be None (no limit) or a number of seconds > 0, got {timeout!r}")
        if self.response_cache is True and self.decoupled is True:
            problems.append("response_cache is not supported for a decoupled (streaming) model")
        problems.extend(self._check_warmup())
        if self.resources is not None and not isinstance(self.resources, Resources):
            problems.append(f"resources must be None or a Resources, got {self.resources!r}")
        scale = self.autoscale
        if scale is not None and not isinstance(scale, Autoscale):
            problems.append(f"autoscale must be None or an Autoscale, got {scale!r}")
        elif scale is not None and isinstance(inst, int) and not scale.min_instances <= inst <= scale.max_instances:
            problems.append(
                f"instances ({inst}) must lie within autoscale's {scale.min_instances}..{scale.max_instances}"
            )
        if problems:
            raise ConfigurationError.collect("ModelConfig", problems)

    def _check_warmup(self) -> list[str]:
        warmup = self.warmup
        if isinstance(warmup, Warmup) or not isinstance(warmup, Iterable) or isinstance(warmup, (str, bytes)):
            return [f"warmup must be a sequence of Warmup, got {warmup!r}"]
        warmup = tuple(warmup)
        if not all(isinstance(w, Warmup) for w in warmup):
            return [f"warmup must be a sequence of Warmup, got {list(warmup)!r}"]
        object.__setattr__(self, "warmup", warmup)
        names = [w.name for w in warmup]
        problems = [f"warmup names must be unique, got {names}"] if len(set(names)) != len(names) else []
        size = self.max_batch_size
        if isinstance(self.batching, bool) and isinstance(size, int):
            for w in warmup:
                problems.extend(w.batch_problems(self.batching, size))
        return problems

    @property
    def effective_max_batch_size(self) -> int:
        """Triton's ``max_batch_size``: 0 when the model does not batch."""
        return self.max_batch_size if self.batching else 0
