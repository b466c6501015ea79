"""Device placement: the GPUs a process sees, `ModelConfig(devices=...)` checked and resolved (against this host's
GPUs, or a cluster's count of them), the plan of a model's workers (which one gets which ``CUDA_VISIBLE_DEVICES``),
a cluster instance's share of a GPU, and Triton's ``instance_group`` for it. No GPU (and no Ray) is needed: the
visible GPUs are given."""

from __future__ import annotations

from typing import Any

import pytest

from pybind_serve import ConfigurationError, ModelConfig, Resources, StartupError
from pybind_serve.cluster.pool import actor_options
from pybind_serve.placement import instance_groups, plan, resolve_devices, resolve_on_cluster, visible_gpus
from pybind_serve.spec import ModelSpec


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


@pytest.mark.parametrize(
    ("devices", "gpus", "resolved"),
    [("all", 3.0, ("cuda:0", "cuda:1", "cuda:2")), ("all", 2.9999999999, ("cuda:0", "cuda:1", "cuda:2")),
     ("all", 1.5, ("cuda:0",)), (2, 4.0, ("cuda:0", "cuda:1")), (("cuda:5", "cpu"), 1.0, ("cuda:0", "cpu")),
     (("cpu", "cuda:1", "cuda:0"), 2.0, ("cpu", "cuda:0", "cuda:1")), (("cpu",), 0.0, ("cpu",))],
)  # fmt: skip
def test_devices_on_a_cluster_are_as_many_of_its_gpus(devices: Any, gpus: float, resolved: tuple[str, ...]) -> None:
    """Which GPU is the cluster scheduler's choice: only how many counts, numbered in the model's own order."""
    assert resolve_on_cluster(devices, gpus) == resolved


@pytest.mark.parametrize(
    ("devices", "gpus", "problem"),
    [
        ("all", 0.0, r"devices='all' asks for GPUs, but the Ray cluster has 0 GPUs \(its nodes: CPU 3\)"),
        ("all", 0.5, "devices='all' asks for GPUs, but the Ray cluster has 0 GPUs"),
        (3, 2.0, "devices=3 asks for 3 GPUs, but the Ray cluster has 2 GPUs"),
        (("cuda:0", "cpu", "cuda:1"), 1.0, r"devices=\['cuda:0', 'cpu', 'cuda:1'\] asks for 2 GPUs, but .* has 1 GPU "),
    ],
)
def test_asking_a_cluster_for_more_gpus_than_it_has_fails(devices: Any, gpus: float, problem: str) -> None:
    with pytest.raises(StartupError, match=problem):
        resolve_on_cluster(devices, gpus, "its nodes: CPU 3", "the Ray cluster")


def test_each_instance_on_a_cluster_asks_for_its_share_of_a_gpu_or_none() -> None:
    """``instances`` on each device, in order: 1/instances of a GPU on a GPU entry, none on a "cpu" entry (even
    with num_gpus given); those autoscaling adds beyond go round the devices again."""

    def shares(config: ModelConfig, count: int) -> list[float]:
        spec = ModelSpec("m", 1, (), (), config)
        return [actor_options(spec, instance)["num_gpus"] for instance in range(count)]

    assert shares(ModelConfig(devices=("cuda:0", "cpu", "cuda:1"), instances=2), 8) == [
        0.5,
        0.5,
        0,
        0,
        0.5,
        0.5,
        0.5,
        0.5,
    ]
    assert shares(ModelConfig(devices=("cpu", "cuda:0"), resources=Resources(num_gpus=0.25)), 2) == [0, 0.25]
    assert shares(ModelConfig(devices="all", instances=4), 1) == [0.25]  # not resolved yet: a GPU model
    assert shares(ModelConfig(instances=2), 2) == [0, 0]


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
