"""The systems the suite starts: pybind_serve and its anchors (PyTriton, the bare uvicorn + Starlette ceiling,
LitServe), each with the command that starts it, its fronts, and which cases each front is loaded with."""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .scenarios import SLEEPY_MAX_BATCH, SLEEPY_MS, kserve_body, sample_inputs

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
ANCHORS = ROOT / "benchmarks" / "anchors"  # setup.sh (installs the anchors) and the ceiling's app
OURS = "pybind_serve"


@dataclass(frozen=True)
class Tools:
    """What the systems and load generators run with: perf_analyzer, and the anchors' virtualenv (None: no
    anchors) with the environment PyTriton needs (``LD_LIBRARY_PATH`` holding libpython)."""

    perf_analyzer: str
    anchor_python: str | None = None
    anchor_env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Front:
    """One way in: a protocol and the load generator that drives it, and the kinds of case it is loaded with."""

    protocol: str  # "http" or "grpc"
    generator: str  # "perf_analyzer" or "asyncio"
    kinds: frozenset[str]

    @property
    def label(self) -> str:
        name = {"http": "HTTP", "grpc": "gRPC"}[self.protocol]
        return f"{name} (asyncio)" if self.generator == "asyncio" else name


@dataclass(frozen=True)
class Command:
    """How to start a system. Ports left None are chosen by the server and reported in its handshake: one JSON
    line written to the file descriptor after ``--handshake-fd``, once its ``run()`` returned."""

    argv: list[str]
    cwd: Path = ROOT
    env: dict[str, str] = field(default_factory=dict)
    http_port: int | None = None
    grpc_port: int | None = None


@dataclass(frozen=True)
class System:
    name: str
    fronts: tuple[Front, ...]
    command: Callable[[Tools], Command]
    kserve: bool = True  # speaks KServe v2 (else: LitServe's JSON on /<model>, ready on /health)
    handshake: bool = False  # reports when its run() started and returned: startup (scenario d) is measured
    stop_signal: str = "SIGTERM"
    shm_prefixes: tuple[str, ...] = ()  # its /dev/shm entries, removed if left behind; {pid}: its own pid
    needs_anchors: bool = True

    @property
    def ready_path(self) -> str:
        return "/v2/health/ready" if self.kserve else "/health"

    def request(self, model: str) -> tuple[str, object]:
        """The path and JSON body of a one-row request to ``model``."""
        if self.kserve:
            return f"/v2/models/{model}/infer", kserve_body(model)
        return f"/{model}", sample_inputs(model)


def free_ports(count: int) -> list[int]:
    """Ports the kernel just handed out, held together so that they differ, then released for the server."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def pybind_command(tools: Tools, checkout: Path = ROOT) -> Command:
    """Our server from ``checkout`` (this repository, or another version's checkout: the baseline). Started in
    that folder, and with it first on ``PYTHONPATH``, so that the owner and its front import its package."""
    argv = [sys.executable, "-m", "benchmarks.harness.pybind_server", "--sleepy-ms", str(SLEEPY_MS)]
    return Command(argv, cwd=checkout, env={} if checkout == ROOT else {"PYTHONPATH": str(checkout)})


def pytriton_command(tools: Tools) -> Command:
    assert tools.anchor_python is not None
    http, grpc, metrics = free_ports(3)
    argv = [tools.anchor_python, str(HERE / "pytriton_server.py"), "--sleepy-ms", str(SLEEPY_MS)]
    argv += ["--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics)]
    return Command(argv, env=tools.anchor_env, http_port=http, grpc_port=grpc)


def ceiling_command(tools: Tools) -> Command:
    # Our interpreter, so the ceiling runs on the very uvicorn, Starlette, uvloop and httptools our front does:
    # the gap to it is our front's own overhead.
    (port,) = free_ports(1)
    argv = [sys.executable, "-m", "uvicorn", "ceiling_app:app", "--host", "127.0.0.1", "--port", str(port)]
    return Command([*argv, "--log-level", "warning", "--no-access-log"], cwd=ANCHORS, http_port=port)


def litserve_command(tools: Tools) -> Command:
    assert tools.anchor_python is not None
    (port,) = free_ports(1)
    argv = [tools.anchor_python, str(HERE / "litserve_server.py"), "--port", str(port)]
    argv += ["--sleepy-ms", str(SLEEPY_MS), "--max-batch", str(SLEEPY_MAX_BATCH)]
    return Command(argv, env=tools.anchor_env, http_port=port)


def front(protocol: str, generator: str, *kinds: str) -> Front:
    return Front(protocol, generator, frozenset(kinds))


OUR_FRONTS = (
    front("http", "perf_analyzer", "a", "b", "b-shm", "c"),
    front("grpc", "perf_analyzer", "a", "b", "c"),
    front("http", "asyncio", "a", "c"),
)
BASELINE = "baseline"


def baseline(checkout: Path) -> System:
    """pybind_serve as another checkout has it (``--baseline``): a change's before, measured in the same run."""
    return System(
        f"{OURS} {BASELINE}",
        OUR_FRONTS,
        lambda tools: pybind_command(tools, checkout),
        handshake=True,
        shm_prefixes=("pybind_serve_{pid}_",),
        needs_anchors=False,
    )


SYSTEMS = {
    "pybind_serve": System(
        OURS,
        OUR_FRONTS,
        pybind_command,
        handshake=True,
        shm_prefixes=("pybind_serve_{pid}_",),
        needs_anchors=False,
    ),
    "pytriton": System(
        "PyTriton",
        (front("http", "perf_analyzer", "a", "b", "b-shm", "c"), front("grpc", "perf_analyzer", "a", "b", "c")),
        pytriton_command,
        handshake=True,
        shm_prefixes=("pytrtion", "psm_"),  # sic: PyTriton's own spelling
    ),
    "ceiling": System("ceiling", (front("http", "perf_analyzer", "a"),), ceiling_command, needs_anchors=False),
    "litserve": System(
        "LitServe", (front("http", "asyncio", "a", "c"),), litserve_command, kserve=False, stop_signal="SIGINT"
    ),
}
