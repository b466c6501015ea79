"""Where a model's instances run: the GPUs this host shows, a model's ``devices`` resolved against them, and the
plan of its workers (one per instance: its device, and what its ``CUDA_VISIBLE_DEVICES`` must be).

``ModelConfig(devices=..., instances=k)`` follows Triton's ``instance_group``: ``k`` instances (default 1) on each
device listed. ``devices`` is ``"all"`` (every GPU this process can see), a count ``n`` (the first ``n``), or a
list of ``"cuda:i"`` and ``"cpu"``. GPUs are numbered as this process sees them: with ``CUDA_VISIBLE_DEVICES=2,3``
set, ``cuda:0`` is physical GPU 2. A worker on ``cuda:i`` gets ``CUDA_VISIBLE_DEVICES`` set to that one GPU
before anything in it can initialise CUDA, so inside the worker its GPU is ``cuda:0``. Under a cluster backend
(`Serve(backend=RayBackend(...))`) the GPUs are the cluster's, not this host's: `resolve_on_cluster`.

>>> resolve_devices("all", ["0", "1"])
('cuda:0', 'cuda:1')
>>> [(p.instance, p.device, p.visible_devices) for p in plan(("cuda:1", "cpu"), 2, ["0", "1"])]
[(0, 'cuda:0', '1'), (1, 'cuda:0', '1'), (2, 'cpu', ''), (3, 'cpu', '')]
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError, StartupError

__all__ = [
    "ALL",
    "Placement",
    "instance_groups",
    "listed_gpus",
    "normalize_devices",
    "plan",
    "resolve_devices",
    "resolve_on_cluster",
    "visible_gpus",
]

ALL = "all"
_CUDA = re.compile(r"^cuda:(\d+)$")
_NVIDIA_PROC = "/proc/driver/nvidia/gpus"  # one folder per GPU the NVIDIA driver has (Linux)


@dataclass(frozen=True)
class Placement:
    """One worker of a model: its instance index, its device as the worker sees it (``cuda:0`` or ``cpu``), the
    device as the binding process names it, and the ``CUDA_VISIBLE_DEVICES`` it runs with ("" for CPU: none)."""

    instance: int
    device: str
    host_device: str
    visible_devices: str

    @property
    def gpu(self) -> bool:
        return self.device != "cpu"


def listed_gpus(environ: Mapping[str, str] | None = None) -> list[str] | None:
    """The GPUs ``CUDA_VISIBLE_DEVICES`` lets this process use (indices or UUIDs); None when it is not set."""
    listed = (os.environ if environ is None else environ).get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return None
    visible = []
    for name in (name.strip() for name in listed.split(",")):
        if not name or name.startswith("-"):  # CUDA stops at the first entry that names no GPU ("-1" hides all)
            break
        visible.append(name)
    return visible


def visible_gpus(environ: Mapping[str, str] | None = None) -> list[str]:
    """The GPUs this process can use, as the values a child's ``CUDA_VISIBLE_DEVICES`` takes (indices or UUIDs):
    those ``CUDA_VISIBLE_DEVICES`` lists when it is set, else every GPU of the NVIDIA driver. No CUDA library is
    loaded to find out."""
    listed = listed_gpus(environ)
    if listed is not None:
        return listed
    try:
        return [str(i) for i in range(len(os.listdir(_NVIDIA_PROC)))]
    except OSError:
        return []


def normalize_devices(devices: Any) -> tuple[str, ...] | str | int | None:
    """``ModelConfig.devices`` as it is kept: None, ``"all"``, a count, or a tuple of ``"cuda:i"`` / ``"cpu"``
    (a ``torch.device`` is taken by its name). Raises `ConfigurationError` naming what is wrong."""
    if devices is None or devices == ALL:
        return ALL if devices is not None else None
    if isinstance(devices, int) and not isinstance(devices, bool):
        if devices < 1:
            raise ConfigurationError(f"devices must be >= 1 GPUs, got {devices}")
        return devices
    if isinstance(devices, (str, bytes)) or not isinstance(devices, Sequence) or not devices:
        raise ConfigurationError(
            f"devices must be 'all', a number of GPUs, or a list like ['cuda:0', 'cuda:1', 'cpu'], got {devices!r}"
        )
    names = tuple(str(device) for device in devices)
    for name in names:
        if name != "cpu" and not _CUDA.match(name):
            hint = " (name the GPU: 'cuda:0')" if name == "cuda" else ""
            raise ConfigurationError(f"devices: {name!r} is not 'cpu' or 'cuda:<index>'{hint}")
    if len(set(names)) != len(names):
        raise ConfigurationError(f"devices: {list(names)} names a device twice; use instances= for several per device")
    return names


def resolve_devices(devices: Sequence[str] | str | int, gpus: Sequence[str]) -> tuple[str, ...]:
    """``devices`` as the list of devices it means on a host whose visible GPUs are ``gpus``.

    Raises `ConfigurationError` when it asks for GPUs the host does not have.
    """
    seen = f"this process sees {len(gpus)} GPU{'' if len(gpus) == 1 else 's'}"
    if devices == ALL:
        if not gpus:
            raise ConfigurationError(f"devices='all' asks for GPUs, but {seen} (CUDA_VISIBLE_DEVICES, NVIDIA driver)")
        return tuple(f"cuda:{i}" for i in range(len(gpus)))
    if isinstance(devices, int):
        if devices > len(gpus):
            raise ConfigurationError(f"devices={devices} asks for {devices} GPUs, but {seen}")
        return tuple(f"cuda:{i}" for i in range(devices))
    for name in devices:
        match = _CUDA.match(name)
        if match and int(match[1]) >= len(gpus):
            raise ConfigurationError(f"devices: {name} is not there: {seen}")
    return tuple(devices)


def resolve_on_cluster(
    devices: Sequence[str] | str | int, gpus: float, has: str = "", cluster: str = "the cluster"
) -> tuple[str, ...]:
    """``devices`` as the devices it means on a cluster of ``gpus`` GPUs in all (whole ones count), whose scheduler
    chooses which GPU each instance gets: ``"all"`` every GPU, ``n`` that many, a list as many as it names
    ``"cuda:i"`` (which ``i`` does not matter) and its ``"cpu"`` entries as they are. The model's GPUs are
    numbered ``cuda:0`` to ``cuda:<n-1>``, its own numbering, not any node's. For the error: ``has``, what the
    cluster has, and ``cluster``, its name.

    Raises `StartupError` when it asks for more GPUs than the cluster has (any, for ``"all"``): never a silent CPU run.

    >>> resolve_on_cluster("all", 3.0)
    ('cuda:0', 'cuda:1', 'cuda:2')
    >>> resolve_on_cluster(("cuda:3", "cpu", "cuda:1"), 4.0)
    ('cuda:0', 'cpu', 'cuda:1')
    """
    whole = int(gpus + 1e-9)  # Ray sums fractions of GPUs in floating point
    seen = f"{cluster} has {whole} GPU{'' if whole == 1 else 's'}{f' ({has})' if has else ''}"
    if devices == ALL:
        if not whole:
            raise StartupError(f"devices='all' asks for GPUs, but {seen}")
        return tuple(f"cuda:{i}" for i in range(whole))
    if isinstance(devices, int):
        if devices > whole:
            raise StartupError(f"devices={devices} asks for {devices} GPU{'s' * (devices != 1)}, but {seen}")
        return tuple(f"cuda:{i}" for i in range(devices))
    assert not isinstance(devices, str)
    asked = sum(device != "cpu" for device in devices)
    if asked > whole:
        raise StartupError(f"devices={list(devices)} asks for {asked} GPU{'s' * (asked != 1)}, but {seen}")
    numbers = iter(range(asked))
    return tuple(device if device == "cpu" else f"cuda:{next(numbers)}" for device in devices)


def plan(devices: tuple[str, ...], per_device: int, gpus: Sequence[str]) -> list[Placement]:
    """The workers of a model with resolved ``devices``, ``per_device`` instances on each, in that order."""
    placements: list[Placement] = []
    for host_device in devices:
        match = _CUDA.match(host_device)
        for _ in range(per_device):
            if match:
                placement = Placement(len(placements), "cuda:0", host_device, gpus[int(match[1])])
            else:
                placement = Placement(len(placements), "cpu", "cpu", "")
            placements.append(placement)
    return placements


def instance_groups(
    name: str, devices: Sequence[str] | str | int | None, instances: int | None
) -> list[dict[str, Any]]:
    """Triton's ``instance_group`` for a model: one KIND_GPU group (``count`` instances on each of ``gpus``; no
    ``gpus`` means all of them, as in Triton) and one KIND_CPU group, as its ``devices`` have them; a model without
    ``devices`` has one KIND_CPU group (its worker processes, or the one thread of the binding process).

    >>> instance_groups("m", ("cuda:0", "cuda:1", "cpu"), 2)
    [{'name': 'm_0', 'kind': 'KIND_GPU', 'count': 2, 'gpus': [0, 1]}, {'name': 'm_1', 'kind': 'KIND_CPU', 'count': 2}]
    """
    if devices is None:
        return [{"name": f"{name}_0", "kind": "KIND_CPU", "count": instances or 1}]
    per_device = instances or 1
    if devices == ALL:
        return [{"name": f"{name}_0", "kind": "KIND_GPU", "count": per_device}]
    if isinstance(devices, int):
        devices = tuple(f"cuda:{i}" for i in range(devices))
    assert not isinstance(devices, str)
    gpus = [int(match[1]) for device in devices if (match := _CUDA.match(device))]
    groups: list[dict[str, Any]] = []
    if gpus:
        groups.append({"name": f"{name}_{len(groups)}", "kind": "KIND_GPU", "count": per_device, "gpus": gpus})
    cpus = sum(device == "cpu" for device in devices)
    if cpus:
        groups.append({"name": f"{name}_{len(groups)}", "kind": "KIND_CPU", "count": per_device * cpus})
    return groups
