"""The shim's server side (`pytriton.triton`, `pytriton.model_config`, `pytriton.decorators`): PyTriton's
arguments become pybind_serve's, and a `Triton` serves what PyTriton's would, against real clients."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import venv
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pytriton
from pytriton.decorators import batch, triton_context
from pytriton.exceptions import PyTritonValidationError
from pytriton.model_config import DynamicBatcher, ModelConfig, ModelWarmup, QueuePolicy, Tensor, WarmupInput
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig, serve_arguments

import pybind_serve
from pybind_serve.client import ModelClient
from tests.integration.conftest import WAIT_S

SHIM = Path(__file__).resolve().parents[2] / "compat" / "pytriton"
OPEN = TritonSecurityConfig(restricted_endpoints=[])
CALLS: list[dict[str, Any]] = []


def _free_ports(**extra: Any) -> TritonConfig:
    return TritonConfig(http_port=0, grpc_port=0, metrics_port=0, **extra)


@batch
def add_sub(**inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = inputs.values()
    CALLS.append({k: v.copy() for k, v in inputs.items()})
    return a + b, a - b  # PyTriton's convention: outputs in their declared order


@pytest.fixture
def triton() -> Iterator[Triton]:
    CALLS.clear()
    with Triton(config=_free_ports(cache_config=["local,size=1048576"]), security_config=OPEN) as server:
        yield server


def _bind_add_sub(triton: Triton, **config: Any) -> None:
    triton.bind(
        "AddSub",
        add_sub,
        inputs=[Tensor(dtype=np.float32, shape=(-1,)), Tensor(dtype=np.float32, shape=(-1,))],
        outputs=[Tensor(name="add", dtype=np.float32, shape=(-1,)), Tensor(dtype=np.float32, shape=(-1,))],
        config=ModelConfig(max_batch_size=8, **config),
    )


# -- arguments ---------------------------------------------------------------------------------------------------


def test_the_shim_says_what_it_is() -> None:
    assert pytriton.IS_PYBIND_SERVE is True
    assert pytriton.__version__.startswith("0.7.0+pybind.serve.")
    assert pybind_serve.__version__ == pytriton.PYBIND_SERVE_VERSION


def test_triton_config_maps_onto_serve_arguments() -> None:
    config = TritonConfig(
        http_port=9000,
        allow_grpc=False,
        metrics_port=9002,
        http_address="127.0.0.1",
        exit_timeout_secs=7,
        log_verbose=1,
        http_header_forward_pattern="x-.*",
        cache_config=["local,size=4096"],
        http_restricted_api="statistics,model-config:admin-key=s3cret",
        allow_vertex_ai=True,
        vertex_ai_port=8085,
    )
    args = serve_arguments(config, TritonSecurityConfig(access_token="tok"))
    assert (args["host"], args["http_port"], args["grpc_port"], args["metrics_port"]) == ("127.0.0.1", 9000, None, 9002)
    assert args["drain_timeout_s"] == 7.0 and args["log_level"] == "debug"
    assert args["http_header_forward_pattern"] == "x-.*" and args["response_cache_bytes"] == 4096
    token, admin = args["restricted"]
    assert token == pybind_serve.Restriction(
        ("shared-memory", "model-repository", "statistics", "trace", "logging"), "triton-access-token", "tok"
    )
    assert admin == pybind_serve.Restriction(("model-config",), "admin-key", "s3cret")  # statistics: the token's
    assert args["vertex_ai"] == pybind_serve.VertexAI(port=8085)
    defaults = serve_arguments(TritonConfig(), OPEN)
    assert (defaults["host"], defaults["http_port"], defaults["grpc_port"], defaults["metrics_port"]) == (
        "0.0.0.0",
        8000,
        8001,
        8002,
    )
    assert defaults["restricted"] == [] and "response_cache_bytes" not in defaults


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (TritonConfig(model_repository=Path("/models")), "not a Triton model repository"),
        (TritonConfig(allow_sagemaker=True), "SageMaker"),
        (TritonConfig(grpc_use_ssl=True), "tls_certfile"),
        (TritonConfig(cache_config=["redis,host=x"]), "'local' response cache"),
        (TritonConfig(http_restricted_api="statistics"), "<endpoints>:<header>=<value>"),
    ],
)
def test_options_that_cannot_be_honoured_are_refused(config: TritonConfig, message: str) -> None:
    with pytest.raises(PyTritonValidationError, match=message):
        serve_arguments(config, OPEN)


def test_config_comes_from_the_environment_and_explicit_values_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTRITON_TRITON_CONFIG_GRPC_PORT", "45436")
    monkeypatch.setenv("PYTRITON_TRITON_CONFIG_ALLOW_METRICS", "false")
    monkeypatch.setenv("PYTRITON_TRITON_CONFIG_CACHE_CONFIG_0", "local,size=2048")
    from_env = TritonConfig.from_env()
    assert (from_env.grpc_port, from_env.allow_metrics, from_env.cache_config) == (45436, False, ["local,size=2048"])
    with Triton(config=TritonConfig(http_port=0, grpc_port=0), security_config=OPEN) as triton:
        assert triton.serve_instance.metrics_port is None  # from the environment
        assert triton.serve_instance.grpc_port not in (None, 45436)  # explicit


def test_security_config_validates_and_generates_a_token() -> None:
    with pytest.raises(PyTritonValidationError, match="Invalid endpoint names"):
        TritonSecurityConfig(restricted_endpoints=["statistics", "everything"])
    assert TritonSecurityConfig().access_token
    assert TritonSecurityConfig(restricted_endpoints=[]).access_token is None
    with pytest.raises(PyTritonValidationError, match="has to be allowed"):
        TritonConfig(allow_http=False, allow_grpc=False)


def test_model_config_becomes_pybind_serves() -> None:
    from pytriton._mapping import serve_config

    policy = QueuePolicy(default_timeout_microseconds=500, max_queue_size=3)
    config = ModelConfig(
        max_batch_size=8,
        batcher=DynamicBatcher(
            max_queue_delay_microseconds=100,
            preferred_batch_size=[2, 4],
            priority_levels=2,
            default_queue_policy=policy,
            priority_queue_policy={1: policy},
        ),
        response_cache=True,
        model_warmup=[ModelWarmup("w", 2, {"a": WarmupInput(dtype=np.float32, shape=(3,), zero_data=True)}, 2)],
    )
    mapped = serve_config(config)
    assert (mapped.max_batch_size, mapped.batcher.max_queue_delay_us, mapped.batcher.preferred_batch_sizes) == (
        8,
        100,
        (2, 4),
    )
    expected_policy = pybind_serve.QueuePolicy(default_timeout_us=500, allow_timeout_override=False, max_queue_size=3)
    assert mapped.batcher.default_queue_policy == expected_policy
    assert mapped.batcher.priority_queue_policies[1] == expected_policy
    assert mapped.response_cache is True
    (warmup,) = mapped.warmup
    assert (warmup.name, warmup.batch_size, warmup.count, warmup.inputs["a"].zero_data) == ("w", 2, 2, True)
    assert serve_config(ModelConfig()).max_batch_size == 4  # PyTriton's default, not ours


# -- serving -----------------------------------------------------------------------------------------------------


def test_unnamed_tensors_are_named_as_pytriton_names_them(triton: Triton) -> None:
    _bind_add_sub(triton)
    config = httpx.get(f"{triton.serve_instance.http_url}/v2/models/AddSub/config", timeout=WAIT_S).json()
    assert [i["name"] for i in config["input"]] == ["INPUT_1", "INPUT_2"]
    assert [o["name"] for o in config["output"]] == ["add", "OUTPUT_2"]
    with ModelClient(triton.serve_instance.http_url, "AddSub") as client:
        out = client.infer_batch(INPUT_1=np.ones((2, 1), np.float32), INPUT_2=np.ones((2, 1), np.float32))
    assert out["add"].tolist() == [[2.0], [2.0]] and out["OUTPUT_2"].tolist() == [[0.0], [0.0]]


def test_a_triton_starts_on_enter_and_binds_live(triton: Triton) -> None:
    assert triton.is_connected() and triton.is_alive()  # no model yet: alive, as PyTriton says
    _bind_add_sub(triton)
    assert triton.is_alive()
    triton.run()  # already running: nothing to do
    assert triton.stop() is True and triton.stop() is False
    assert not triton.is_connected() and not triton.is_alive()


def test_model_names_are_checked_as_pytriton_checks_them(triton: Triton) -> None:
    with pytest.raises(PyTritonValidationError, match="cannot be empty"):
        triton.bind("", add_sub, [], [])
    with pytest.raises(PyTritonValidationError, match="alphanumeric characters, dots, underscores and dashes"):
        triton.bind("a/b", add_sub, [], [])
    with pytest.raises(PyTritonValidationError, match="fn must be callable"):
        triton.bind("m", 42, [Tensor(dtype=np.float32, shape=(-1,))], [Tensor(dtype=np.float32, shape=(-1,))])  # type: ignore[arg-type]


def test_response_cache_and_warmup_reach_the_server(triton: Triton) -> None:
    warmup = ModelWarmup("zeros", 3, {"INPUT_1": WarmupInput(dtype=np.float32, shape=(2,), zero_data=True)}, 1)
    warmup.inputs["INPUT_2"] = WarmupInput(dtype=np.float32, shape=(2,), random_data=True)
    _bind_add_sub(triton, response_cache=True, model_warmup=[warmup])
    assert len(CALLS) == 1 and CALLS[0]["INPUT_1"].shape == (3, 2) and not CALLS[0]["INPUT_1"].any()
    with ModelClient(f"grpc://127.0.0.1:{triton.serve_instance.grpc_port}", "AddSub") as client:
        for _ in range(3):
            client.infer_batch(np.ones((2, 1), np.float32), np.ones((2, 1), np.float32))
    assert len(CALLS) == 2  # the warmup, then one call: the other two came from the cache


def test_triton_context_gives_the_bound_models_config(triton: Triton) -> None:
    @triton_context
    def describe(requests: list[Any], **kwargs: Any) -> list[dict[str, np.ndarray]]:
        config = kwargs["triton_context"].model_configs[describe]
        names = np.array([[config.model_name.encode(), str(config.max_batch_size).encode()]], dtype=object)
        return [{"about": names} for _ in requests]

    triton.bind(
        "Describe",
        describe,
        [Tensor(dtype=np.float32, shape=(-1,))],
        [Tensor(name="about", dtype=bytes, shape=(2,))],
        config=ModelConfig(max_batch_size=2),
    )
    with ModelClient(triton.serve_instance.http_url, "Describe") as client:
        out = client.infer_sample(INPUT_1=np.ones(1, np.float32))
    assert out["about"].tolist() == [b"Describe", b"2"]


def test_the_default_security_config_protects_statistics_with_the_token() -> None:
    with Triton(config=_free_ports()) as triton:
        url, token = triton.serve_instance.http_url, triton.get_access_token()
        assert token
        assert httpx.get(f"{url}/v2/models/stats", timeout=WAIT_S).status_code == 403
        answer = httpx.get(f"{url}/v2/models/stats", headers={"triton-access-token": token}, timeout=WAIT_S)
        assert answer.status_code == 200
        assert httpx.get(f"{url}/v2/health/ready", timeout=WAIT_S).status_code == 200


def test_vertex_ai_is_served_on_its_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIP_PREDICT_ROUTE", "/predict")
    monkeypatch.setenv("AIP_HEALTH_ROUTE", "/health")
    with Triton(config=_free_ports(allow_vertex_ai=True, vertex_ai_port=0), security_config=OPEN) as triton:
        _bind_add_sub(triton)
        port = triton.serve_instance.vertex_ai_port
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=WAIT_S).status_code == 200
        body = {
            "inputs": [
                {"name": name, "datatype": "FP32", "shape": [1, 2], "data": [1, 2]} for name in ("INPUT_1", "INPUT_2")
            ]
        }
        answer = httpx.post(f"http://127.0.0.1:{port}/predict", json=body, timeout=WAIT_S)
        assert answer.status_code == 200 and answer.json()["outputs"][0]["data"] == [2.0, 4.0]


# -- installing --------------------------------------------------------------------------------------------------


def _probe() -> Any:
    spec = importlib.util.spec_from_file_location("nvidia_probe", SHIM / "_build" / "nvidia_probe.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_nvidia_pytriton(site_packages: Path) -> None:
    info = site_packages / "nvidia_pytriton-0.7.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: nvidia-pytriton\nVersion: 0.7.0\n")


def test_the_build_refuses_an_environment_with_nvidia_pytriton(tmp_path: Path) -> None:
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=False)
    python = str(env_dir / "bin" / "python")
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    probe = _probe()
    assert probe.nvidia_pytriton_version(python) is None
    _fake_nvidia_pytriton(Path(site))
    assert probe.nvidia_pytriton_version(python) == "0.7.0"
    assert probe.nvidia_pytriton_version(sys.executable) is None  # the environment of these tests has none


def test_importing_beside_nvidia_pytriton_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_nvidia_pytriton(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pytriton._warn_if_beside_nvidia_pytriton()
    assert any("nvidia-pytriton 0.7.0 is installed beside" in str(w.message) for w in caught)
