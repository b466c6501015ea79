"""Device placement: the GPUs a process sees, `ModelConfig(devices=...)` checked and resolved, the plan of a
model's workers (which one gets which ``CUDA_VISIBLE_DEVICES``) and Triton's ``instance_group`` for it. No GPU
is needed: the visible GPUs are given."""

from __future__ import annotations

from typing import Any

import pytest

from pybind_serve import ConfigurationError, ModelConfig
from pybind_serve.placement import instance_groups, plan, resolve_devices, visible_gpus


@pytest.mark.parametrize(
    ("listed", "visible"),
    [("0,1", ["0", "1"]), ("3", ["3"]), ("GPU-1a2b,GPU-3c4d", ["GPU-1a2b", "GPU-3c4d"]), ("", []), ("-1", []),
     ("2,-1,3", ["2"]), (" 4 , 5 ", ["4", "5"])],
)  # fmt: skip
def test_cuda_visible_devices_decides_what_is_visible(listed: str, visible: list[str]) -> None:
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": listed}) == visible


@pytest.mark.parametrize(
    ("devices", "kept"),
    [(None, None), ("all", "all"), (2, 2), (["cuda:1", "cpu"], ("cuda:1", "cpu")), (("cuda:0",), ("cuda:0",))],
)
def test_devices_are_kept_normalized(devices: Any, kept: Any) -> None:
    assert ModelConfig(devices=devices).devices == kept


class TorchDevice:  # what a torch.device prints as
    def __str__(self) -> str:
        return "cuda:3"


def test_a_torch_device_is_taken_by_its_name() -> None:
    assert ModelConfig(devices=[TorchDevice(), "cpu"]).devices == ("cuda:3", "cpu")


@pytest.mark.parametrize(
    ("devices", "problem"),
    [
        (0, "devices must be >= 1 GPUs, got 0"),
        ("cuda", "devices must be 'all', a number of GPUs, or a list like ['cuda:0', 'cuda:1', 'cpu'], got 'cuda'"),
        (["cuda"], "devices: 'cuda' is not 'cpu' or 'cuda:<index>' (name the GPU: 'cuda:0')"),
        (["gpu:0"], "devices: 'gpu:0' is not 'cpu' or 'cuda:<index>'"),
        ([], "devices must be 'all', a number of GPUs, or a list like ['cuda:0', 'cuda:1', 'cpu'], got []"),
        (["cuda:0", "cuda:0"],
         "devices: ['cuda:0', 'cuda:0'] names a device twice; use instances= for several per device"),
    ],
)  # fmt: skip
def test_bad_devices_are_configuration_errors(devices: Any, problem: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        ModelConfig(devices=devices)
    assert caught.value.problems == [problem]


@pytest.mark.parametrize(
    ("devices", "gpus", "resolved"),
    [("all", ["0", "1"], ("cuda:0", "cuda:1")), (1, ["0", "1"], ("cuda:0",)), (("cuda:1", "cpu"), ["4", "5"],
     ("cuda:1", "cpu")), (("cpu",), [], ("cpu",))],
)  # fmt: skip
def test_devices_resolve_against_the_visible_gpus(devices: Any, gpus: list[str], resolved: tuple[str, ...]) -> None:
    assert resolve_devices(devices, gpus) == resolved


@pytest.mark.parametrize(
    ("devices", "gpus", "problem"),
    [
        ("all", [], "devices='all' asks for GPUs, but this process sees 0 GPUs"),
        (3, ["0", "1"], "devices=3 asks for 3 GPUs, but this process sees 2 GPUs"),
        (("cuda:1",), ["0"], "devices: cuda:1 is not there: this process sees 1 GPU"),
    ],
)
def test_asking_for_gpus_the_host_lacks_is_a_configuration_error(devices: Any, gpus: list[str], problem: str) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        resolve_devices(devices, gpus)


def test_each_gpu_worker_sees_only_its_gpu_as_cuda_0() -> None:
    workers = plan(("cuda:0", "cuda:1", "cpu"), 2, ["GPU-a", "GPU-b"])
    assert [(w.instance, w.device, w.host_device, w.visible_devices) for w in workers] == [
        (0, "cuda:0", "cuda:0", "GPU-a"),
        (1, "cuda:0", "cuda:0", "GPU-a"),
        (2, "cuda:0", "cuda:1", "GPU-b"),
        (3, "cuda:0", "cuda:1", "GPU-b"),
        (4, "cpu", "cpu", ""),
        (5, "cpu", "cpu", ""),
    ]
    assert [w.gpu for w in workers] == [True] * 4 + [False] * 2


@pytest.mark.parametrize(
    ("devices", "instances", "groups"),
    [
        (None, None, [{"name": "m_0", "kind": "KIND_CPU", "count": 1}]),
        (None, 3, [{"name": "m_0", "kind": "KIND_CPU", "count": 3}]),
        (("cuda:0", "cuda:2"), 2, [{"name": "m_0", "kind": "KIND_GPU", "count": 2, "gpus": [0, 2]}]),
        (("cuda:1", "cpu"), None, [{"name": "m_0", "kind": "KIND_GPU", "count": 1, "gpus": [1]},
                                   {"name": "m_1", "kind": "KIND_CPU", "count": 1}]),
        (("cpu",), 4, [{"name": "m_0", "kind": "KIND_CPU", "count": 4}]),
        ("all", 2, [{"name": "m_0", "kind": "KIND_GPU", "count": 2}]),  # Triton: no gpus = every GPU
        (2, None, [{"name": "m_0", "kind": "KIND_GPU", "count": 1, "gpus": [0, 1]}]),
    ],
)  # fmt: skip
def test_instance_groups_say_what_runs_where(devices: Any, instances: int | None, groups: list[Any]) -> None:
    assert instance_groups("m", devices, instances) == groups
