"""The code blocks of a Markdown page, and running them in order as a reader would.

Which blocks run:

- ```` ```python ```` blocks run in one namespace per page, in order (a later block may use what an earlier one
  defined, as notebook cells do). Every ``Serve(...)`` listens on free ports instead of Triton's (a port given
  as ``None`` stays off), and ``serve.serve()`` on a `Serve` of the page becomes ``serve.run()``, as in
  tests/examples/test_readme.py: the ``with`` block around it then stops the server (on a `RemoteServe`, a
  call that returns at once).
- ```` ```bash ```` (``sh``, ``shell``) blocks run with bash (``-e -o pipefail``) from the repository root,
  with this interpreter's directory first on ``PATH``.
- A block right after ``<!-- server -->`` is a server script (Python): it runs in a process of its own, with
  its ``Serve`` on free ports, until it is ready (``/v2/health/ready``); the blocks after it on the page talk
  to it, their ``:8000`` / ``:8001`` / ``:8002`` replaced by its ports; at the end of the page (or at the next
  server block) it gets SIGINT, as Ctrl-C, and must exit 0.
- A block right after ``<!-- not-run: reason -->`` does not run; the reason is required (needs a GPU, an
  excerpt of a file tested elsewhere, ...).
- Blocks of any other language are text: none, ``text``, ``console`` (a transcript: commands and what they
  print), ``pycon``, ``json``, ``yaml``, ...

A Python block's traceback names the page and its line (``docs/page.md``, line N).

Run as ``python -m tests.examples.docs_blocks docs/page.md``: what test_docs_code_blocks.py does, in a
process of its own (so a page that hangs is killed, with everything it started).
"""

from __future__ import annotations

import ast
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RUN_LANGUAGES = {"python": "python", "py": "python", "bash": "shell", "sh": "shell", "shell": "shell"}
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)[^\n]*$")
MARKER = re.compile(r"^\s*<!--\s*(?P<what>not-run|server)\b:?\s*(?P<reason>.*?)\s*-->\s*$")
SHELL_TIMEOUT_S = 120
READY_TIMEOUT_S = 60
EXIT_TIMEOUT_S = 40  # a server's drain_timeout_s (30 s by default) and a few seconds
TRITON_PORTS = {"8000": 0, "8001": 1, "8002": 2}


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its language, its text (dedented), and the marker before it."""

    path: Path
    line: int  # of the opening fence, from 1
    language: str
    code: str
    marker: str | None = None  # "not-run" or "server"
    reason: str = ""

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def kind(self) -> str:
        """``skip`` (not run), ``server``, ``python``, ``shell``, or ``text``."""
        if self.marker == "not-run":
            return "skip"
        if self.marker == "server":
            return "server"
        return RUN_LANGUAGES.get(self.language, "text")


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, in order, with the marker on the line before each (if any)."""
    lines = path.read_text().splitlines()
    found, i, previous = [], 0, ""
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            if lines[i].strip():
                previous = lines[i]
            i += 1
            continue
        indent, fence = opening.group("indent"), opening.group("fence")
        closing = re.compile(rf"^ *{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        end = i + 1
        while end < len(lines) and not closing.match(lines[end]):
            end += 1
        body = [line[len(indent) :] if line.startswith(indent) else line.lstrip() for line in lines[i + 1 : end]]
        marker = MARKER.match(previous)
        found.append(
            Block(
                path,
                i + 1,
                opening.group("lang").lower(),
                "\n".join(body) + "\n",
                marker.group("what") if marker else None,
                marker.group("reason") if marker else "",
            )
        )
        previous, i = "", end + 1
    return found


def markers_without_block(path: Path) -> list[int]:
    """Lines of ``<!-- not-run -->`` / ``<!-- server -->`` markers that no fenced block follows."""
    lines, orphans = path.read_text().splitlines(), []
    for number, line in enumerate(lines, 1):
        if MARKER.match(line):
            following = next((text for text in lines[number:] if text.strip()), "")
            if not FENCE.match(following):
                orphans.append(number)
    return orphans


# -- turning a block into what runs ---------------------------------------------------------------------------


# What ``.serve()`` (which blocks until Ctrl-C) becomes on an object of the page: something that returns at once.
NOT_BLOCKING = {"Serve": "run", "RemoteServe": "is_connected"}


def _called(node: ast.AST | None) -> str:
    """The name of the class or function a call calls (``Serve(...)``, ``pybind_serve.Serve(...)``), or ''."""
    if not isinstance(node, ast.Call):
        return ""
    func = node.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


class _ServeOnPorts(ast.NodeTransformer):
    """``Serve(...)`` on the given ports (None kept: that port stays off); ``<a Serve>.serve()`` made not to
    block (`NOT_BLOCKING`) unless ``blocking``."""

    def __init__(self, ports: tuple[int, int, int], objects: dict[str, str], blocking: bool) -> None:
        self.ports, self.objects, self.blocking = ports, objects, blocking

    def visit_Call(self, node: ast.Call) -> Any:
        self.generic_visit(node)
        func = node.func
        if _called(node) == "Serve":
            given = {k.arg: k for k in node.keywords if k.arg}
            for option, port in zip(("http_port", "grpc_port", "metrics_port"), self.ports, strict=True):
                keyword = given.get(option)
                if keyword is None:
                    node.keywords.append(ast.keyword(option, ast.Constant(port)))
                elif not (isinstance(keyword.value, ast.Constant) and keyword.value.value is None):
                    keyword.value = ast.Constant(port)
        elif (
            not self.blocking
            and isinstance(func, ast.Attribute)
            and func.attr == "serve"
            and isinstance(func.value, ast.Name)
            and func.value.id in self.objects
            and not node.args
            and not node.keywords
        ):
            func.attr = NOT_BLOCKING[self.objects[func.value.id]]
        return node


def serving_objects(tree: ast.AST) -> dict[str, str]:
    """Names bound to a `Serve` or `RemoteServe` (``with Serve(...) as name``, ``name = Serve(...)``): its class."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.withitem) and _called(node.context_expr) in NOT_BLOCKING:
            if isinstance(node.optional_vars, ast.Name):
                names[node.optional_vars.id] = _called(node.context_expr)
        elif isinstance(node, ast.Assign) and _called(node.value) in NOT_BLOCKING:
            names |= {t.id: _called(node.value) for t in node.targets if isinstance(t, ast.Name)}
    return names


def python_tree(code: str, ports: tuple[int, int, int], objects: dict[str, str], blocking: bool = False) -> ast.Module:
    """The block's code with its servers moved to ``ports`` (and, unless ``blocking``, not blocking).
    ``objects`` (the page's `Serve` and `RemoteServe` objects so far) gets this block's."""
    tree = ast.parse(code)
    objects |= serving_objects(tree)
    return ast.fix_missing_locations(_ServeOnPorts(ports, objects, blocking).visit(tree))


def on_ports(code: str, ports: tuple[int, int, int] | None) -> str:
    """``:8000`` / ``:8001`` / ``:8002`` (a URL's port) replaced by the running server block's ports."""
    if ports is None:
        return code
    return re.sub(r"(?<=:)(800[012])\b", lambda m: str(ports[TRITON_PORTS[m.group(1)]]), code)


def free_ports(count: int) -> tuple[int, ...]:
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return tuple(sock.getsockname()[1] for sock in sockets)
    finally:
        for sock in sockets:
            sock.close()


# -- running a page ----------------------------------------------------------------------------------------------


class Server:
    """A server block running as a script of its own."""

    def __init__(self, block: Block, workdir: Path) -> None:
        self.block = block
        ports = free_ports(3)
        self.ports: tuple[int, int, int] = (ports[0], ports[1], ports[2])
        script = workdir / f"server_{block.line}.py"
        script.write_text(ast.unparse(python_tree(block.code, self.ports, {}, blocking=True)))
        self.log = workdir / f"server_{block.line}.log"
        with self.log.open("wb") as sink:
            self.process = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, stdout=sink, stderr=sink)
        self._wait_ready()

    def _wait_ready(self) -> None:
        url = f"http://127.0.0.1:{self.ports[0]}/v2/health/ready"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.block.where}: the server exited {self.process.returncode}:\n{self.output}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.block.where}: not ready within {READY_TIMEOUT_S} s:\n{self.output}")

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """Ctrl-C: the script must drain, stop and exit 0."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"{self.block.where}: the server ignored Ctrl-C:\n{self.output}") from None
        assert code == 0, f"{self.block.where}: the server exited {code} after Ctrl-C:\n{self.output}"


def run_shell(block: Block, code: str) -> None:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=SHELL_TIMEOUT_S,
    )
    sys.stdout.write(done.stdout if done.stdout.endswith("\n") or not done.stdout else done.stdout + "\n")
    assert done.returncode == 0, f"{block.where}: exited {done.returncode}:\n{done.stdout}\n{done.stderr}"


def stop_everything(namespace: dict[str, Any]) -> None:
    """Stop what the page's Python blocks left running (a notebook-style page ends with a running `Serve`)."""
    from pybind_serve import RemoteServe, Serve

    for value in list(namespace.values()):
        if isinstance(value, (Serve, RemoteServe)):
            value.stop()


def run_page(path: Path) -> int:
    """Run the page's blocks in order; the number of blocks that ran."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    objects: dict[str, str] = {}
    server: Server | None = None
    ran = 0
    with tempfile.TemporaryDirectory(prefix="docs_blocks_") as workdir:
        try:
            for block in blocks(path):
                kind = block.kind
                if kind in ("skip", "text"):
                    continue
                print(f"--- {block.where} ({kind})", flush=True)
                ports = server.ports if server is not None else None
                if kind == "server":
                    if server is not None:
                        server.stop()
                    server = Server(block, Path(workdir))
                elif kind == "python":
                    tree = python_tree(on_ports(block.code, ports), (0, 0, 0), objects)
                    ast.increment_lineno(tree, block.line)  # tracebacks name the page's own lines
                    exec(compile(tree, str(block.path), "exec"), namespace)
                else:
                    run_shell(block, on_ports(block.code, ports))
                ran += 1
        finally:
            stop_everything(namespace)
            if server is not None:
                server.stop()
    return ran


if __name__ == "__main__":
    count = run_page(Path(sys.argv[1]).resolve())
    print(f"=== {count} blocks ran", flush=True)
