"""The deployment recipes of deploy/ hold: each file is checked by the tool that knows its format, and against the
server it deploys.

- Dockerfile: hadolint; run as a container would run it (PID 1, read-only root, a small /dev/shm) in Linux
  namespaces; built and run by docker where a docker daemon answers.
- Kubernetes: the manifests validate against Kubernetes' own schemas (kubernetes-validate, strict, 1.30), and their
  probes, ports and grace period match the server's endpoints and drain.
- KServe: the InferenceService has what KServe needs of a custom v2 predictor; its pod part validates as a PodSpec.
- Grafana: every query parses as PromQL and names only metrics and labels a real server exports; every metric we
  export is on the dashboard.
- systemd: the unit stops the server the way it drains; ``systemd-analyze verify`` finds nothing.
- yamllint on every YAML file.
"""

from __future__ import annotations

import configparser
import contextlib
import inspect
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pybind_serve import ModelConfig, Serve, Tensor, batch
from tests.conftest import children_of, wait_until
from tests.examples.test_examples import free_ports

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
KUBERNETES = DEPLOY / "kubernetes" / "pybind-serve.yaml"
INFERENCE_SERVICE = DEPLOY / "kserve" / "inferenceservice.yaml"
DASHBOARD = DEPLOY / "grafana" / "pybind_serve.json"
UNIT = DEPLOY / "systemd" / "pybind-serve.service"
KUBERNETES_VERSION = "1.30.0"  # the oldest the manifests support (the preStop sleep action)
DRAIN_TIMEOUT_S = inspect.signature(Serve).parameters["drain_timeout_s"].default
STOP_AFTER_DRAIN_S = 4  # docs/limits.md: workers get SIGTERM, SIGKILL 3 s later; then shared memory is removed
PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}

yaml = pytest.importorskip("yaml", reason="PyYAML comes with the test extra (yamllint, kubernetes-validate)")

# The main example's request (add_sub: a + b and a - b), as a client that speaks plain JSON sends it.
ADD_SUB_BODY = {
    "inputs": [
        {"name": "a", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]},
        {"name": "b", "datatype": "FP32", "shape": [1, 2], "data": [3, 4]},
    ]
}


def yaml_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def tool(name: str) -> str:
    """An executable of this environment (a pip package's script), or skip."""
    found = shutil.which(name, path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[test]' installs it)")
    return found


# -- Dockerfile -----------------------------------------------------------------------------------------------------


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    lines = [line for line in dockerfile.read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    found = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def instruction(dockerfile: Path, keyword: str) -> str:
    values = [rest for key, rest in instructions(dockerfile) if key == keyword]
    assert len(values) == 1, f"{dockerfile} should have one {keyword}, has {len(values)}"
    return values[0]


def exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), arguments
    return value


def healthcheck_command(dockerfile: Path) -> list[str]:
    _, _, command = instruction(dockerfile, "HEALTHCHECK").partition(" CMD ")
    assert command, "HEALTHCHECK should run a command"
    return exec_form(command)


def test_dockerfile_lints_clean_with_hadolint() -> None:
    result = subprocess.run([tool("hadolint"), str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_serves_add_sub_as_the_docs_say() -> None:
    assert re.fullmatch(r"python:\$\{PYTHON_VERSION\}-slim", instruction(DOCKERFILE, "FROM"))
    assert instruction(DOCKERFILE, "EXPOSE").split() == [str(port) for port in PORTS.values()]
    assert instruction(DOCKERFILE, "STOPSIGNAL") == "SIGTERM"
    user = instruction(DOCKERFILE, "USER")
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), "a numeric non-root user, which runAsNonRoot can check"
    assert exec_form(instruction(DOCKERFILE, "ENTRYPOINT")) == ["dumb-init", "--single-child", "--"]
    command = exec_form(instruction(DOCKERFILE, "CMD"))
    assert command[command.index("--host") + 1] == "0.0.0.0"
    health = healthcheck_command(DOCKERFILE)
    assert health[0] == "python" and "http://127.0.0.1:8000/v2/health/ready" in health[-1]


def test_dockerignore_keeps_the_build_context_small() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv"} <= set(ignored)
    copied = [rest.split()[0] for key, rest in instructions(DOCKERFILE) if key == "COPY" and "--from" not in rest]
    for source in copied:
        assert (ROOT / source).exists(), f"the Dockerfile copies {source}, which is not in the repository"
        assert source.split("/")[0] not in ignored, f".dockerignore drops {source}, which the Dockerfile copies"


# A PID namespace (the command is its PID 1; all of it dies with PID 1, and PID 1 with unshare) and a mount namespace
# (mounts made in it stay in it).
NAMESPACES = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--mount"]


def namespaces_work() -> str | None:
    """Why a container cannot be imitated here (Linux namespaces need root), or None."""
    if os.geteuid() != 0:
        return "imitating a container needs root (PID and mount namespaces, mounts)"
    if shutil.which("unshare") is None:
        return "no unshare (util-linux)"
    mounts = "mount -t tmpfs -o size=1m tmpfs /dev/shm && mount -o remount,bind,ro / && test ! -w /etc"
    result = subprocess.run([*NAMESPACES, "sh", "-c", mounts], capture_output=True, text=True, timeout=30)
    return None if result.returncode == 0 else f"namespaces or mounts failed: {result.stderr.strip()}"


@contextlib.contextmanager
def running(command: list[str], log: Path, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()  # the PID namespace goes with its init, and every process in it
        process.wait(30)


def test_image_command_runs_as_in_a_container(tmp_path: Path) -> None:
    """The image's ENTRYPOINT + CMD and HEALTHCHECK, as a container runs them: PID 1 of its own PID namespace,
    read-only root file system, its own small /tmp and /dev/shm (the sizes of deploy/kubernetes), and the model
    copied where the Dockerfile puts it. The server answers, the health check tells ready from stopped, and
    SIGTERM to PID 1 (what `docker stop` and the kubelet send) drains and exits 0."""
    why_not = namespaces_work()
    if why_not:
        pytest.skip(why_not)
    dumb_init = tool("dumb-init")
    app = tmp_path / "app"
    for key, rest in instructions(DOCKERFILE):
        source, _, destination = rest.partition(" ")
        if key == "COPY" and destination.startswith("/app/"):
            target = app / Path(destination).relative_to("/app")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / source, target)
    assert instruction(DOCKERFILE, "WORKDIR") == "/app"

    http_port, grpc_port, metrics_port = free_ports(3)
    entrypoint = exec_form(instruction(DOCKERFILE, "ENTRYPOINT"))
    command = exec_form(instruction(DOCKERFILE, "CMD"))
    command += ["--http-port", str(http_port), "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port)]
    programs = {"dumb-init": dumb_init, "python": sys.executable}
    argv = [programs.get(word, word) for word in [*entrypoint, *command]]
    # The container's own temp dir: a tmpfs, as deploy/kubernetes mounts on /tmp; here on a directory of our own
    # (over /tmp it would hide the app, which pytest put there), given to the server as TMPDIR.
    temp = tmp_path / "tmp"
    temp.mkdir()
    inside = " && ".join(
        [
            "mount -t tmpfs -o size=1g tmpfs /dev/shm",
            f"mount -t tmpfs -o size=64m tmpfs {shlex.quote(str(temp))}",
            "mount -o remount,bind,ro /",
            f"cd {shlex.quote(str(app))}",
            "exec " + shlex.join(argv),
        ]
    )
    health = [programs.get(word, word) for word in healthcheck_command(DOCKERFILE)]
    health[-1] = health[-1].replace(":8000/", f":{http_port}/")

    def healthy() -> bool:
        return subprocess.run(health, capture_output=True, timeout=30).returncode == 0

    log = tmp_path / "container.log"
    with running([*NAMESPACES, "sh", "-c", inside], log, {**os.environ, "TMPDIR": str(temp)}) as process:
        assert wait_until(lambda: healthy() or process.poll() is not None, 60, 0.2), log.read_text()
        assert process.poll() is None, f"the container exited {process.returncode}:\n{log.read_text()}"
        response = httpx.post(f"http://127.0.0.1:{http_port}/v2/models/add_sub/infer", json=ADD_SUB_BODY, timeout=30)
        assert response.status_code == 200, response.text
        assert [output["data"] for output in response.json()["outputs"]] == [[4.0, 6.0], [-2.0, -2.0]]
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30)
        assert 'nv_inference_request_success{model="add_sub",version="1"} 1' in metrics.text

        init = sorted(children_of(process.pid))
        assert len(init) == 1, init
        with open(f"/proc/{init[0]}/status") as f:
            assert re.search(r"^NSpid:\s+\d+\s+1$", f.read(), re.MULTILINE), "dumb-init should be PID 1"
        os.kill(init[0], signal.SIGTERM)
        assert process.wait(DRAIN_TIMEOUT_S + STOP_AFTER_DRAIN_S + 5) == 0, log.read_text()
    assert not healthy()


def docker_works() -> str | None:
    """Why the image cannot be built here, or None."""
    docker = shutil.which("docker") or shutil.which("podman")
    if docker is None:
        return "no container runtime (docker or podman) on PATH"
    try:
        result = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return f"`{docker} info` did not answer within 30 s"
    return None if result.returncode == 0 else f"`{docker} info` failed: {result.stderr.strip()[-300:]}"


def test_docker_image_builds_and_serves(tmp_path: Path) -> None:
    why_not = docker_works()
    if why_not:
        pytest.skip(why_not)
    docker = shutil.which("docker") or shutil.which("podman")
    assert docker is not None
    tag = f"pybind-serve-test:{os.getpid()}"

    def run(*args: str, timeout: float = 120) -> str:
        result = subprocess.run([docker, *args], capture_output=True, text=True, timeout=timeout)
        assert result.returncode == 0, f"docker {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result.stdout.strip()

    python_version = re.search(r"^ARG PYTHON_VERSION=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert python_version, "the Dockerfile should give PYTHON_VERSION a default"
    base = instruction(DOCKERFILE, "FROM").replace("${PYTHON_VERSION}", python_version.group(1))
    pulled = subprocess.run([docker, "pull", base], capture_output=True, text=True, timeout=600)
    if pulled.returncode != 0:
        pytest.skip(f"the base image {base} cannot be pulled here: {pulled.stderr.strip()[-300:]}")
    run("build", "-f", str(DOCKERFILE), "-t", tag, str(ROOT), timeout=1200)
    try:
        container = run("run", "-d", "--shm-size=256m", "--stop-timeout=40", "-p", "127.0.0.1::8000", tag)
        try:
            port = run("port", container, "8000").splitlines()[0].rsplit(":", 1)[1]
            status = ["inspect", "-f", "{{.State.Health.Status}}", container]
            assert wait_until(lambda: run(*status) == "healthy", 120, 1), run("logs", container)
            response = httpx.post(f"http://127.0.0.1:{port}/v2/models/add_sub/infer", json=ADD_SUB_BODY, timeout=30)
            assert response.status_code == 200, response.text
            run("stop", container, timeout=60)
            assert run("inspect", "-f", "{{.State.ExitCode}}", container) == "0", run("logs", container)
        finally:
            subprocess.run([docker, "rm", "-f", container], capture_output=True, timeout=60)
    finally:
        subprocess.run([docker, "rmi", "-f", tag], capture_output=True, timeout=120)


# -- Kubernetes and KServe ------------------------------------------------------------------------------------------


def kubernetes_validate() -> Any:
    return pytest.importorskip("kubernetes_validate", reason="kubernetes-validate comes with the test extra")


def test_kubernetes_manifests_validate_against_kubernetes_schemas() -> None:
    validator = kubernetes_validate()
    documents = yaml_documents(KUBERNETES)
    assert sorted(doc["kind"] for doc in documents) == ["Deployment", "Service"]
    for doc in documents:
        validator.validate(doc, KUBERNETES_VERSION, strict=True)
    # ... and the validation is real: a misspelled field fails it.
    deployment = next(doc for doc in documents if doc["kind"] == "Deployment")
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 45
    with pytest.raises(validator.ValidationError):
        validator.validate(broken, KUBERNETES_VERSION, strict=True)


def probe_paths(container: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    return {
        kind: (container[kind]["httpGet"]["path"], container[kind]["httpGet"]["port"])
        for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }


def test_kubernetes_probes_ports_and_grace_period_match_the_server() -> None:
    documents = {doc["kind"]: doc for doc in yaml_documents(KUBERNETES)}
    pod = documents["Deployment"]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert {port["name"]: port["containerPort"] for port in container["ports"]} == PORTS
    assert probe_paths(container) == {
        "startupProbe": ("/v2/health/ready", "http"),
        "livenessProbe": ("/v2/health/live", "http"),
        "readinessProbe": ("/v2/health/ready", "http"),
    }
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120, "room for slow model loads"
    service_ports = {port["name"]: (port["port"], port["targetPort"]) for port in documents["Service"]["spec"]["ports"]}
    assert service_ports == {name: (number, name) for name, number in PORTS.items()}
    annotations = pod["metadata"]["annotations"]
    assert (
        annotations["prometheus.io/port"] == str(PORTS["metrics"]) and annotations["prometheus.io/path"] == "/metrics"
    )

    # SIGTERM comes after preStop; the server then drains for drain_timeout_s and stops within a few seconds.
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    assert grace >= pre_stop + DRAIN_TIMEOUT_S + STOP_AFTER_DRAIN_S + 5, (grace, pre_stop, DRAIN_TIMEOUT_S)
    assert grace <= pre_stop + DRAIN_TIMEOUT_S + 30, "not so long that a stuck pod lingers"

    volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    shm = volumes[mounts["/dev/shm"]]["emptyDir"]
    assert shm["medium"] == "Memory" and shm["sizeLimit"]
    assert "/tmp" in mounts, "the root file system is read-only: the server's socket files go to /tmp"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["spec"]["securityContext"]["runAsUser"] == int(instruction(DOCKERFILE, "USER").split(":")[0])


# The fields of a KServe predictor that are not a PodSpec's (ComponentExtensionSpec).
KSERVE_EXTENSION_FIELDS = {
    "minReplicas",
    "maxReplicas",
    "scaleTarget",
    "scaleMetric",
    "scaleMetricType",
    "containerConcurrency",
    "timeout",
    "canaryTrafficPercent",
    "logger",
    "batcher",
    "labels",
    "annotations",
    "deploymentStrategy",
    "autoScaling",
}


def test_kserve_inference_service_is_a_custom_v2_predictor() -> None:
    """KServe's CRD is not among Kubernetes' schemas: what KServe needs of a custom predictor is checked here, and
    the predictor's pod part against Kubernetes' PodSpec."""
    (isvc,) = yaml_documents(INFERENCE_SERVICE)
    assert (isvc["apiVersion"], isvc["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", isvc["metadata"]["name"]), "a DNS-1035 label"
    predictor = isvc["spec"]["predictor"]
    assert set(predictor) - KSERVE_EXTENSION_FIELDS <= {"containers", "volumes"}, set(predictor)
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"  # what makes it a custom predictor
    assert {env["name"]: env["value"] for env in container["env"]}["PROTOCOL"] == "v2"
    (port,) = container["ports"]  # serverless mode routes one port
    assert (port["name"], port["containerPort"]) in {("http1", PORTS["http"]), ("h2c", PORTS["grpc"])}
    assert probe_paths(container) == {
        "startupProbe": ("/v2/health/ready", PORTS["http"]),
        "livenessProbe": ("/v2/health/live", PORTS["http"]),
        "readinessProbe": ("/v2/health/ready", PORTS["http"]),
    }
    assert predictor["annotations"]["prometheus.kserve.io/port"] == str(PORTS["metrics"])
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in predictor["volumes"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory"

    validator = kubernetes_validate()
    pod_spec = {key: value for key, value in predictor.items() if key not in KSERVE_EXTENSION_FIELDS}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": isvc["metadata"]["name"]}, "spec": pod_spec}
    validator.validate(pod, KUBERNETES_VERSION, strict=True)


def test_yaml_lints_clean() -> None:
    linter = pytest.importorskip("yamllint.linter", reason="yamllint comes with the test extra")
    from yamllint.config import YamlLintConfig

    config = YamlLintConfig("{extends: default, rules: {line-length: {max: 120}}}")
    files = sorted(DEPLOY.rglob("*.yaml")) + sorted(DEPLOY.rglob("*.yml"))
    assert len(files) >= 2
    problems = [
        f"{path.relative_to(ROOT)}:{p.line}: {p.desc}" for path in files for p in linter.run(path.read_text(), config)
    ]
    assert not problems, "\n".join(problems)


# -- systemd --------------------------------------------------------------------------------------------------------


def unit_settings() -> dict[str, dict[str, str]]:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return {section: dict(parser[section]) for section in parser.sections()}


def test_systemd_unit_stops_the_server_the_way_it_drains() -> None:
    service = unit_settings()["Service"]
    assert service["KillSignal"] == "SIGTERM"
    # SIGTERM to the main process only: worker processes that get it directly stop mid-batch.
    assert service["KillMode"] == "mixed"
    assert int(service["TimeoutStopSec"]) >= DRAIN_TIMEOUT_S + STOP_AFTER_DRAIN_S + 5
    assert service["Restart"] == "on-failure"
    assert "--host 0.0.0.0" in service["ExecStart"]


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("no systemd-analyze on PATH")
    # The unit's interpreter is where its install steps put it; verify needs an executable that exists.
    text = re.sub(r"^ExecStart=\S+", f"ExecStart={sys.executable}", UNIT.read_text(), flags=re.MULTILINE)
    unit = tmp_path / UNIT.name
    unit.write_text(text)
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stdout + result.stderr


# -- Grafana --------------------------------------------------------------------------------------------------------


@batch
def add_sub(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    return {"add": a + b, "sub": a - b}


def exported_metrics(monkeypatch: pytest.MonkeyPatch) -> tuple[set[str], set[str], set[str]]:
    """(family names, sample names, label names) of what a real server's /metrics answers once each kind of series
    has a value (a success, a failure, a cache hit and miss), plus the GPU gauges as `SystemMetrics` renders them
    through NVML (a fake one, as in tests/unit/test_system_metrics.py: CI has no GPU)."""
    text = ""
    with Serve(http_port=0, grpc_port=0, metrics_port=0) as serve:
        serve.bind(
            "add_sub",
            add_sub,
            inputs=[Tensor("a", np.float32, (-1,)), Tensor("b", np.float32, (-1,))],
            outputs=[Tensor("add", np.float32, (-1,)), Tensor("sub", np.float32, (-1,))],
            config=ModelConfig(max_batch_size=8, response_cache=True),
        )
        serve.run()
        url = f"{serve.http_url}/v2/models/add_sub/infer"
        assert [httpx.post(url, json=ADD_SUB_BODY, timeout=30).status_code for _ in range(2)] == [200, 200]  # miss, hit
        assert httpx.post(url, json={"inputs": []}, timeout=30).status_code == 400  # a failure
        assert serve.metrics_url is not None
        text += httpx.get(serve.metrics_url, timeout=30).text
    text += gpu_metrics(monkeypatch)
    # Names as Prometheus stores them, read from the exposition itself: prometheus_client's parser renames a
    # counter's samples "<name>_total", which ours (Triton's names) are not.
    families = set(re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE))
    sample_names = set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.MULTILINE))
    labels = {label for family in text_string_to_metric_families(text) for s in family.samples for label in s.labels}
    return families, sample_names, labels


def gpu_metrics(monkeypatch: pytest.MonkeyPatch) -> str:
    from prometheus_client import CollectorRegistry, generate_latest

    from pybind_serve.system_metrics import SystemMetrics
    from tests.unit.test_system_metrics import FakeNvml

    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml())
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)  # every (fake) GPU
    system = SystemMetrics()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(system)
    return system.render_counters().decode() + generate_latest(registry).decode()


# Grafana's variables, replaced by what they stand for so that the queries parse as PromQL.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "15s"}
TARGET_LABELS = {"instance", "job"}  # added by Prometheus to every series it scrapes


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    queries = []
    for panel in dashboard["panels"]:
        queries += [target["expr"] for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["definition"])
            assert found, variable["definition"]
            queries.append(found.group(1))
    return queries


def selectors(query: str) -> tuple[set[str], set[str]]:
    """The metric names and label names a PromQL query uses (Grafana's variables filled in)."""
    promql = pytest.importorskip("promql_parser", reason="promql-parser comes with the test extra")
    for variable, value in GRAFANA_VARIABLES.items():
        query = query.replace(variable, value)
    query = re.sub(r"\$\w+", ".*", query)  # $model, $instance: regex matchers' values
    names: set[str] = set()
    labels: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql.VectorSelector):
            names.add(node.name)
            labels.update(matcher.name for matcher in node.matchers.matchers)
        elif isinstance(node, promql.AggregateExpr) and node.modifier is not None:
            labels.update(node.modifier.labels)

    promql.walk(promql.parse(query), visit)
    return names, labels


def test_grafana_dashboard_shows_exactly_the_metrics_we_export(monkeypatch: pytest.MonkeyPatch) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    families, sample_names, exported_labels = exported_metrics(monkeypatch)
    used: set[str] = set()
    for query in dashboard_queries(dashboard):
        names, labels = selectors(query)
        assert names, f"no metric in {query}"
        assert names <= sample_names, f"not exported: {sorted(names - sample_names)} in {query}"
        unknown = labels - exported_labels - TARGET_LABELS
        assert not unknown, f"no such label: {sorted(unknown)} in {query}"
        used |= names
    shown = used | {name.rsplit("_", 1)[0] for name in used if name.endswith(("_bucket", "_sum", "_count"))}
    assert families <= shown, f"exported but not on the dashboard: {sorted(families - shown)}"


def test_grafana_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert variables == {"datasource", "instance", "model"}
    text = json.dumps(dashboard["panels"])
    used_variables = set(re.findall(r"\$(?!__)(\w+)", text)) | set(re.findall(r"\$\{(\w+)\}", text))
    assert used_variables <= variables, used_variables - variables
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert panel["targets"] and panel["description"], panel["title"]
