"""The ``pybind-serve`` command as a user runs it: real processes, real servers, real requests.

``test_the_commands_of_the_cli_page_print_what_it_shows`` runs every command of docs/cli.md in order (its
```` ```console ```` blocks: ``$ command`` lines, each followed by what it prints) and checks what each prints
against the page, so the page cannot drift: a ``serve`` command that is shown starting a server runs in the
background until the end of the page, when it gets SIGINT (Ctrl-C) and must exit 0, having printed the lines
shown (a ``...`` line stands for any lines, ``...`` in a line for any text); the others run to the end, and an
error shown (``pybind-serve: error:``, ``usage:``) must be exactly what is printed, with its exit status (1, 2).
Triton's ports (8000, 8001, 8002) and the page's others (9000, 9100, 9101) are replaced by free ones, also
where a ``serve`` command leaves them implied (its ``--http-port`` and the others are added). A
```` ```python ```` block after ``<!-- not-run: the file NAME ... -->`` is written to NAME in the directory the
commands run in (where ``examples`` links to the repository's).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import descendants_of, wait_until
from tests.examples.docs_blocks import blocks
from tests.examples.test_examples import free_ports

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "cli.md"
STARTED = "; Ctrl-C stops"  # the end of the line `serve` prints once the server is up
READY_TIMEOUT_S = 60
COMMAND_TIMEOUT_S = 60
EXIT_TIMEOUT_S = 40  # drain_timeout_s (30 s) and a few seconds
PAGE_PORTS = ("8000", "8001", "8002", "9000", "9100", "9101")
DEFAULT_PORTS = {"--http-port": "8000", "--grpc-port": "8001", "--metrics-port": "8002"}


def command_line() -> list[str]:
    """The console script next to this interpreter (what ``pip install`` made), else ``python -m pybind_serve``."""
    script = Path(sys.executable).parent / "pybind-serve"
    return [str(script)] if script.exists() else [sys.executable, "-m", "pybind_serve"]


# -- matching what a command printed against what the page shows ------------------------------------------------


def _line_pattern(line: str) -> str:
    return ".*".join(re.escape(part) for part in line.split("...")) + r"\n"


def shown_pattern(expected: list[str], exact: bool) -> re.Pattern[str]:
    """A regex for output showing ``expected``: each line, ``...`` lines standing for any lines; unless ``exact``,
    other lines may come between and around them."""
    gap = r"(?:.*\n)*?"
    parts = [gap if line.strip() == "..." else _line_pattern(line) for line in expected]
    if not exact:
        parts = [gap, *(part for part in parts if part != gap for part in (part, gap))]
    return re.compile("".join(parts))


def shows(output: str, expected: list[str], exact: bool = False) -> bool:
    text = output if output.endswith("\n") or not output else output + "\n"
    return shown_pattern(expected, exact).fullmatch(text) is not None


def test_the_matching_of_shown_output() -> None:
    assert shows("a\nb 123 c\nd\n", ["b ... c"])
    assert shows("a\nb\nc\n", ["a", "...", "c"], exact=True)
    assert not shows("a\nb\nc\n", ["a", "c"], exact=True)
    assert not shows("a\nb\n", ["b", "a"])


# -- the page's commands --------------------------------------------------------------------------------------------


@dataclass
class Command:
    line: str  # as the page shows it
    expected: list[str] = field(default_factory=list)
    where: str = ""

    @property
    def error(self) -> int:
        """The exit status the shown output means: 2 for a usage error, 1 for an error, else 0."""
        if any(line.startswith("usage:") for line in self.expected):
            return 2
        return 1 if any(line.startswith("pybind-serve: error:") for line in self.expected) else 0

    @property
    def starts_a_server(self) -> bool:
        return shlex.split(self.line)[1] == "serve" and not self.error


def page_commands() -> list[Command | tuple[str, str]]:
    """The page's commands, and ``(name, source)`` for each file it shows, in order."""
    found: list[Command | tuple[str, str]] = []
    for block in blocks(PAGE):
        file = re.match(r"the file (\S+)", block.reason)
        if block.language == "python" and block.marker == "not-run" and file:
            found.append((file.group(1), block.code))
        elif block.language == "console":
            for number, line in enumerate(block.code.splitlines()):
                if line.startswith("$ "):
                    found.append(Command(line[2:], where=f"{block.where}+{number + 1}"))
                elif found and isinstance(found[-1], Command):
                    found[-1].expected.append(line)
    return found


class Background:
    """A ``serve`` command running until `stop`; its output (stdout and stderr) collected as it comes."""

    def __init__(self, argv: list[str], cwd: Path) -> None:
        self.process = subprocess.Popen(
            argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def close(self) -> None:
        """Once the process has exited: the rest of its output read, the pipe closed."""
        self._reader.join(5)
        if self.process.stdout is not None:
            self.process.stdout.close()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_started(self) -> str:
        """The output up to the line that says the server is up."""
        started = wait_until(lambda: STARTED in self.output or self.process.poll() is not None, READY_TIMEOUT_S)
        assert started and STARTED in self.output, f"no startup line (exit {self.process.poll()}):\n{self.output}"
        text = self.output
        return text[: text.index("\n", text.index(STARTED)) + 1]

    def stop(self, sig: int = signal.SIGINT) -> int:
        """``sig`` (Ctrl-C's by default); the exit status, once the process and every one it started are gone."""
        processes = descendants_of(self.process.pid)
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"the server did not stop on signal {sig}:\n{self.output}") from None
        self.close()
        assert wait_until(lambda: not (processes & descendants_of(os.getpid())), 15), "processes left running"
        return code


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """Where commands run: a directory of the test's own, with ``examples`` the repository's."""
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    return tmp_path


@pytest.fixture
def servers() -> Iterator[list[Background]]:
    """The servers a test starts: killed at the end if still running."""
    started: list[Background] = []
    yield started
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()
        server.close()


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)


def test_the_commands_of_the_cli_page_print_what_it_shows(workdir: Path, servers: list[Background]) -> None:
    ports = dict(zip(PAGE_PORTS, map(str, free_ports(len(PAGE_PORTS))), strict=True))
    on_ports = re.compile(r"\b(" + "|".join(PAGE_PORTS) + r")\b")

    def ported(text: str) -> str:
        return on_ports.sub(lambda m: ports[m.group(1)], text)

    commands = page_commands()
    assert sum(isinstance(c, Command) for c in commands) >= 10, commands
    running: list[tuple[Command, Background]] = []
    for item in commands:
        if isinstance(item, tuple):
            (workdir / item[0]).write_text(item[1])
            continue
        argv = shlex.split(ported(item.line))
        assert argv[0] == "pybind-serve", f"{item.where}: not a pybind-serve command"
        if argv[1] == "serve":  # on the free ports, also where the page leaves Triton's default ports implied
            argv += [ported(a) for o, p in DEFAULT_PORTS.items() if o not in argv for a in (o, p)]
        argv = command_line() + argv[1:]
        expected = [ported(line) for line in item.expected]
        if item.starts_a_server:
            server = Background(argv, workdir)
            servers.append(server)
            shown = expected[: next(i for i, line in enumerate(expected) if STARTED in line) + 1]
            assert shows(server.wait_started(), shown), f"{item.where}: printed\n{server.output}\nnot\n{shown}"
            running.append((item, server))
            continue
        done = run(argv, workdir)
        output = done.stdout + done.stderr
        assert done.returncode == item.error, f"{item.where}: exit {done.returncode}:\n{output}"
        assert shows(output, expected, exact=bool(item.error)), f"{item.where}: printed\n{output}\nnot\n{expected}"
    for item, server in running:
        assert server.stop() == 0, f"{item.where}: exit status after Ctrl-C:\n{server.output}"
        expected = [ported(line) for line in item.expected]
        assert shows(server.output, expected), f"{item.where}: printed\n{server.output}\nnot\n{expected}"


def write(directory: Path, name: str, source: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(source))
    return path


WORKERS = """
    import numpy as np
    from pybind_serve import ModelConfig, Serve, Tensor, batch


    @batch
    def double(x):
        return {"y": x * 2}


    def create_serve():
        serve = Serve(http_port=8000, grpc_port=None, metrics_port=None, log_level="error")
        serve.bind(
            "double",
            double,
            inputs=[Tensor("x", np.float32, (-1,))],
            outputs=[Tensor("y", np.float32, (-1,))],
            config=ModelConfig(max_batch_size=4, instances=2),
        )
        return serve
"""


def test_a_factory_s_serve_with_worker_processes_serves_logs_calls_and_stops_on_sigterm(
    workdir: Path, servers: list[Background]
) -> None:
    write(workdir, "workers.py", WORKERS)
    # over the file's options: --log-level (its "error" would keep the startup line quiet), a free HTTP port for
    # its 8000, and gRPC, which it turns off
    argv = ["serve", "workers.py", "--http-port", "0", "--grpc-port", "0", "--log-level", "warning", "--access-log"]
    server = Background([*command_line(), *argv], workdir)
    servers.append(server)
    started = server.wait_started()
    urls = re.search(r" on (http://127\.0\.0\.1:\d+) \(gRPC (127\.0\.0\.1:\d+)\);", started)
    assert urls, started
    for url in (urls.group(1), f"grpc://{urls.group(2)}"):
        done = run([*command_line(), "infer", url, "double", "-i", "x=[[1, 2], [3, 4]]"], workdir)
        assert (done.returncode, done.stdout) == (0, '{"y": [[2.0, 4.0], [6.0, 8.0]]}\n'), done.stderr
    assert server.stop(signal.SIGTERM) == 0, server.output
    assert re.search(
        r'^INFO: +127\.0\.0\.1:\d+ - "POST /v2/models/double/infer HTTP/1\.1" 200 OK$', server.output, re.M
    )
    call = (
        r'^\[pybind_serve front\] INFO ipv4:127\.0\.0\.1:\d+ - "gRPC /inference\.GRPCInferenceService/ModelInfer" OK '
    )
    assert re.search(call + r"[0-9.]+ ms$", server.output, re.M), server.output


def test_a_serve_object_with_a_bad_log_level_is_one_clear_error(workdir: Path) -> None:
    write(workdir, "loud.py", 'from pybind_serve import Serve\n\nserve = Serve(log_level="loud")\n')
    done = run([*command_line(), "serve", "loud.py"], workdir)
    assert done.returncode == 1
    assert done.stderr == (
        "pybind-serve: error: importing loud.py failed: Serve is invalid (at loud.py:3):\n"
        "  - log_level must be one of 'critical', 'error', 'warning', 'info', 'debug', 'trace', got 'loud'\n"
    )


def test_a_model_that_cannot_start_fails_the_command_with_the_reason(workdir: Path) -> None:
    write(
        workdir,
        "broken_model.py",
        """
        import numpy as np
        from pybind_serve import Serve, Tensor


        class Model:
            def __init__(self):
                raise FileNotFoundError("weights.bin")

            def __call__(self, requests):
                return [{"y": r["x"]} for r in requests]


        def bind(serve):
            serve.bind("model", Model, inputs=[Tensor("x", np.float32, (1,))], outputs=[Tensor("y", np.float32, (1,))])
        """,
    )
    argv = ["serve", "broken_model.py", "--http-port", "0", "--grpc-port", "none", "--metrics-port", "none"]
    done = run(command_line() + argv, workdir)
    assert done.returncode == 1, done.stderr
    last = done.stderr.splitlines()[-1]
    assert last.startswith("pybind-serve: error: model 'model' v1 did not become ready: "), done.stderr
    assert "weights.bin" in last and "Traceback" not in last


def test_python_m_pybind_serve_is_the_same_command(workdir: Path) -> None:
    done = run([sys.executable, "-m", "pybind_serve", "check", "examples/add_sub/server.py"], workdir)
    assert done.returncode == 0 and done.stderr == "pybind-serve: 1 model OK (add_sub v1)\n", done.stderr
    done = run([sys.executable, "-m", "pybind_serve", "--version"], workdir)
    assert done.stdout.startswith("pybind_serve ")


def test_the_console_script_is_declared() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert '\n[project.scripts]\npybind-serve = "pybind_serve.cli:main"' in text


def test_import_errors_show_their_traceback_on_request(workdir: Path) -> None:
    write(workdir, "typo.py", "import numpy as np\n\nx = np.arrray([1])\n")
    done = run([*command_line(), "check", "typo.py"], workdir)
    assert done.returncode == 1
    assert done.stderr.startswith("pybind-serve: error: importing typo.py failed: AttributeError: ")
    assert done.stderr.rstrip().endswith("(at typo.py:3)") and done.stderr.count("\n") == 1
    done = run([*command_line(), "check", "typo.py", "--traceback"], workdir)
    assert "Traceback (most recent call last)" in done.stderr and 'typo.py", line 3' in done.stderr


def test_a_second_server_s_port_error_is_the_only_line_it_prints(workdir: Path, servers: list[Background]) -> None:
    http, grpc_port = free_ports(2)
    ports = ["--grpc-port", str(grpc_port), "--metrics-port", "none"]
    first = Background(
        [*command_line(), "serve", "examples/add_sub/server.py", "--http-port", str(http), *ports], workdir
    )
    servers.append(first)
    first.wait_started()
    done = run([*command_line(), "serve", "examples/add_sub/server.py", "--http-port", "0", *ports], workdir)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"pybind-serve: error: grpc port {grpc_port} on 127.0.0.1 is already in use: stop the other server, "
        "or pass --grpc-port 0 to pick a free port\n"
    )
    assert first.stop() == 0


def test_ctrl_c_while_starting_exits_130_quietly(workdir: Path) -> None:
    write(workdir, "slow.py", "import pathlib, time\n\npathlib.Path('importing').touch()\ntime.sleep(30)\n")
    process = subprocess.Popen([*command_line(), "serve", "slow.py"], cwd=workdir, stderr=subprocess.PIPE, text=True)
    assert wait_until((workdir / "importing").exists, COMMAND_TIMEOUT_S)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=COMMAND_TIMEOUT_S)
    assert process.returncode == 130 and "Traceback" not in err, err
