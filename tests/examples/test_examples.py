"""Every example end to end, as a user runs it: its server.py in a process, its client.py against it, SIGTERM.

Each ``client.py`` runs as after the README's install (``pip install -e .``): what only an extra installs
(``tritonclient``, ``httpx``, ...) cannot be imported. The ``client_tritonclient.py`` variants, for Triton's
users, run with the test extra's ``tritonclient``.

After SIGTERM the server must exit 0 within 15 s, with every process it started gone and no shared-memory
segment of it left in /dev/shm.
"""

from __future__ import annotations

import ast
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import metadata
from pathlib import Path

import httpx
import pytest

from tests.conftest import SHM, wait_until

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 30
CLIENT_TIMEOUT_S = 120
EXIT_TIMEOUT_S = 15


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    metrics_port: int
    log: Path

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def free_ports(count: int) -> list[int]:
    """Ports the kernel just handed out, held together so they differ, then released for the server."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def live_parents() -> dict[int, int]:
    """pid -> parent pid of every live (non-zombie) process, read from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":
                parents[int(entry)] = int(fields[1])
    return parents


def running(pids: set[int]) -> set[int]:
    return pids & live_parents().keys()


def descendants(pid: int) -> set[int]:
    """Live processes below ``pid``."""
    parents = live_parents()
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def segments_of(pid: int) -> list[str]:
    return sorted(name for name in os.listdir(SHM) if name.startswith(f"pybind_serve_{pid}_"))


def wait_ready(server: Server) -> None:
    def ready() -> bool:
        assert server.process.poll() is None, f"the server exited {server.process.returncode}:\n{server.output()}"
        try:
            return httpx.get(f"http://{server.url}/v2/health/ready", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    assert wait_until(ready, READY_TIMEOUT_S, 0.1), f"not ready within {READY_TIMEOUT_S} s:\n{server.output()}"


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[[str], Server]]:
    """``start_server(name)`` runs ``examples/<name>/server.py`` on free ports; always killed at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str) -> Server:
        http_port, grpc_port, metrics_port = free_ports(3)
        log = tmp_path / f"{name}-server.log"
        command = [sys.executable, f"examples/{name}/server.py", "--http-port", str(http_port)]
        command += ["--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port)]
        with log.open("wb") as sink:
            process = subprocess.Popen(command, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
        started.append(process)
        server = Server(process, http_port, grpc_port, metrics_port, log)
        wait_ready(server)
        return server

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(EXIT_TIMEOUT_S)


# Import names of the distributions that only an extra installs (those whose name is not their import name).
IMPORT_NAMES = {"grpcio-health-checking": "grpc_health", "grpcio-tools": "grpc_tools", "nvidia-ml-py": "pynvml"}
# Runs a script as `python script args...` would, with the modules named in argv[1] impossible to import.
NOT_INSTALLED = """
import importlib.abc, os, runpy, sys
blocked = set(sys.argv[1].split(","))
class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r} (only an extra installs it)", name=name)
sys.meta_path.insert(0, NotInstalled())
sys.argv = sys.argv[2:]
sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def extras_only() -> set[str]:
    """The import names of what the package's optional extras install and its dependencies do not (read from
    the installed package's metadata, which pyproject.toml made)."""
    core, extras = set(), set()
    for requirement in metadata("pybind_serve").get_all("Requires-Dist") or []:
        name = re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower()
        (extras if "extra ==" in requirement else core).add(name)
    return {IMPORT_NAMES.get(name, name.replace("-", "_")) for name in extras - core}


def run_client(name: str, *options: str, script: str = "client.py", readme_install: bool | None = None) -> str:
    """``examples/<name>/<script> options...``; as after the README's install (no extras) for ``client.py``, or
    as ``readme_install`` says."""
    command = [sys.executable, f"examples/{name}/{script}", *options]
    if script == "client.py" if readme_install is None else readme_install:
        command[1:1] = ["-c", NOT_INSTALLED, ",".join(sorted(extras_only()))]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S)
    assert done.returncode == 0, f"{name} {script} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_readme_install_lacks_what_the_extras_bring() -> None:
    """What `run_client` makes impossible to import: the test extra's clients, and no core dependency."""
    blocked = extras_only()
    assert {"tritonclient", "httpx", "pytest", "flask", "grpc_health"} <= blocked
    assert not blocked & {"numpy", "grpc", "aiohttp", "uvicorn", "zmq"}
    with pytest.raises(AssertionError, match="No module named 'httpx' \\(only an extra installs it\\)"):
        run_client("add_sub", script="../../tests/examples/imports_httpx.py", readme_install=True)
    assert run_client("add_sub", script="../../tests/examples/imports_httpx.py", readme_install=False)


def test_example_clients_import_only_what_the_readme_installs() -> None:
    """Every example's ``client.py`` (not its ``client_tritonclient.py``) imports the standard library, numpy and
    pybind_serve only: checked here for all of them, and by running them in the tests below."""
    allowed = {"numpy", "pybind_serve", *sys.stdlib_module_names}
    for client in sorted(ROOT.glob("examples/*/client.py")):
        modules = set()
        for node in ast.walk(ast.parse(client.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.partition(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.partition(".")[0])
        assert modules <= allowed, f"{client.relative_to(ROOT)} imports {sorted(modules - allowed)}"


def stop(server: Server) -> None:
    """SIGTERM, as a process manager stops it: exit 0, nothing left behind."""
    processes = descendants(server.process.pid)
    assert processes, "the server runs no front process"
    server.process.send_signal(signal.SIGTERM)
    try:
        returncode = server.process.wait(EXIT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the server did not exit within {EXIT_TIMEOUT_S} s of SIGTERM:\n{server.output()}")
    assert returncode == 0, f"the server exited {returncode} on SIGTERM:\n{server.output()}"
    assert wait_until(lambda: not running(processes), EXIT_TIMEOUT_S), (
        f"the server left processes running: {running(processes)}"
    )
    assert segments_of(server.process.pid) == []


def printed(stdout: str, label: str) -> object:
    """The Python literal the client printed after ``label:``."""
    found = re.search(rf"^\s*{re.escape(label)}: (.*)$", stdout, re.MULTILINE)
    assert found, f"no {label!r} line in:\n{stdout}"
    return ast.literal_eval(found.group(1))


def test_add_sub(start_server: Callable[[str], Server]) -> None:
    server = start_server("add_sub")
    for script in ("client.py", "client_tritonclient.py"):
        for options in (("--url", server.url), ("--protocol", "grpc", "--url", server.grpc_url)):
            stdout = run_client("add_sub", *options, script=script)
            assert printed(stdout, "add") == [[float(i + 1) for i in range(16)]], (script, options)
            assert printed(stdout, "sub") == [[float(i - 1) for i in range(16)]], (script, options)
    stop(server)


def test_identity(start_server: Callable[[str], Server]) -> None:
    server = start_server("identity")
    stdout = run_client("identity", "--url", server.url)
    with_mask, without_mask = stdout.split("with mask=False:")
    assert "with mask=True:" in with_mask
    for part, mask in ((with_mask, [[False]]), (without_mask, [[True]])):  # absent: filled with True
        assert printed(part, "fp32_out") == [[1.5, -2.0, 3.25]]
        assert printed(part, "fp16_out") == [[0.5, 1.0]]
        assert printed(part, "int8_out") == [[-128, 0, 127]]
        assert printed(part, "text_out") == [["héllo wörld".encode()]]
        assert printed(part, "mask_out") == mask
    stop(server)


def test_sleepy(start_server: Callable[[str], Server]) -> None:
    server = start_server("sleepy")
    metrics_url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    stdout = run_client("sleepy", "--url", server.url, "--metrics-url", metrics_url)
    assert re.search(r"^128 requests in [0-9.]+ s$", stdout, re.MULTILINE), stdout
    per_batch = re.search(r"^the model ran (\d+) batches: ([0-9.]+) requests per batch$", stdout, re.MULTILINE)
    assert per_batch, stdout
    assert float(per_batch.group(2)) > 1, f"no dynamic batching happened:\n{stdout}"
    stop(server)


@dataclass
class FlaskApp:
    """A Flask app of ``examples/flask_migration`` running as a user runs it (`stop` takes it as a `Server`)."""

    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_flask_app(tmp_path: Path, name: str, started: list[subprocess.Popen[bytes]]) -> FlaskApp:
    """``examples/flask_migration/<name>.py`` on a free port, once it answers HTTP."""
    (port,) = free_ports(1)
    log = tmp_path / f"flask-{name}.log"
    with log.open("wb") as sink:
        command = [sys.executable, f"examples/flask_migration/{name}.py", "--port", str(port)]
        process = subprocess.Popen(command, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
    started.append(process)
    app = FlaskApp(process, port, log)

    def answers() -> bool:
        assert process.poll() is None, f"{name}.py exited {process.returncode}:\n{app.output()}"
        try:
            httpx.get(f"http://{app.url}/", timeout=2)  # any answer (a 404) means the app is up
        except httpx.TransportError:
            return False
        return True

    assert wait_until(answers, READY_TIMEOUT_S, 0.1), f"{name}.py not up within {READY_TIMEOUT_S} s:\n{app.output()}"
    return app


def test_flask_migration(tmp_path: Path) -> None:
    """The same client gets the same answers from the plain Flask app and the migrated one, whose model
    batched the 32 concurrent requests; SIGTERM stops the migrated app and everything it started."""
    started: list[subprocess.Popen[bytes]] = []
    try:
        before, after = start_flask_app(tmp_path, "before", started), start_flask_app(tmp_path, "after", started)
        plain = run_client("flask_migration", "--url", f"http://{before.url}").splitlines()
        migrated = run_client("flask_migration", "--url", f"http://{after.url}").splitlines()
        assert len(plain) == 65 and re.fullmatch(r"64 requests in [0-9.]+ s", plain[-1]), plain
        assert migrated[:-1] == plain[:-1]
        assert plain[-2].startswith("63 [5.1, 3.5] 400 ")  # the malformed request: the same error answer
        metrics_url = re.search(r"metrics at (http://\S+)", after.output())
        assert metrics_url, after.output()
        metrics = httpx.get(metrics_url.group(1), timeout=10).text
        counts = re.findall(r'^nv_inference(?:_exec)?_count\{model="classifier",version="1"\} (\d+)', metrics, re.M)
        assert len(counts) == 2 and int(counts[1]) < int(counts[0]) == 63, metrics  # exec_count < count
        stop(after)  # type: ignore[arg-type]  # a FlaskApp has what stop uses
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
            process.wait(EXIT_TIMEOUT_S)


TESTED_ELSEWHERE = {"notebook": "tests/integration/test_notebook.py"}  # run by nbclient on a real kernel


def test_every_example_has_a_test_here() -> None:
    examples = {path.name for path in (ROOT / "examples").iterdir() if path.is_dir() and path.name != "__pycache__"}
    assert examples >= {"add_sub", "identity", "sleepy", "flask_migration", "notebook"}, examples
    untested = sorted(name for name in examples - TESTED_ELSEWHERE.keys() if f"test_{name}" not in globals())
    assert not untested, f"examples without an end-to-end test in {Path(__file__).name}: {untested}"
    for path in TESTED_ELSEWHERE.values():
        assert (ROOT / path).is_file(), path


def test_streaming(start_server: Callable[[str], Server]) -> None:
    """The gRPC client prints the prompt's words reversed, one per line; curl's generate_stream gets the same."""
    server = start_server("streaming")
    for script in ("client.py", "client_tritonclient.py"):
        stdout = run_client("streaming", "--url", server.grpc_url, "the quick brown fox", script=script)
        assert stdout.splitlines() == ["fox", "brown", "quick", "the"], script
    url = f"http://{server.url}/v2/models/reverse_words/generate_stream"
    with httpx.stream("POST", url, json={"text_input": "one two"}, timeout=30) as response:
        body = response.read().decode()
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    assert [event for event in body.split("\n\n") if event] == [
        'data: {"model_name":"reverse_words","model_version":"1","text_output":"two"}',
        'data: {"model_name":"reverse_words","model_version":"1","text_output":"one"}',
    ]
    stop(server)
