"""The notebook example on a real Jupyter kernel, and a kernel that dies with a server running.

``examples/notebook/quickstart.ipynb`` is executed top to bottom with nbclient on an ipykernel; the outputs
of its cells are asserted, including that no log lands in a cell but the one traceback of the broken model.
A kernel killed (SIGKILL) or restarted while serving leaves no process, shared memory or port behind.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import re
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from pybind_serve import Serve
from tests.conftest import wait_until
from tests.examples.test_examples import descendants, running, segments_of

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "notebook" / "quickstart.ipynb"
STARTUP_S = 60  # a cold kernel start on a loaded CI machine
CELL_TIMEOUT_S = 60
GONE_S = 15  # the front process sees its lifeline close at once; this bounds a slow machine


@pytest.fixture
def kernel() -> Iterator[KernelManager]:
    """A started python3 kernel in the notebook's folder; shut down (killed if need be) at the end."""
    manager = KernelManager(kernel_name="python3")
    assert manager.kernel_spec is not None
    # This interpreter's ipykernel, whatever "python3" kernel spec the machine has installed elsewhere.
    manager.kernel_spec.argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    manager.start_kernel(cwd=str(NOTEBOOK.parent))
    try:
        yield manager
    finally:
        if manager.has_kernel:
            manager.shutdown_kernel(now=True)
        manager.cleanup_resources()


def kernel_pid(manager: KernelManager) -> int:
    assert manager.provisioner is not None
    return int(manager.provisioner.pid)  # type: ignore[attr-defined]


def outputs(cell: Any, output_type: str, name: str | None = None) -> list[Any]:
    return [o for o in cell.outputs if o.output_type == output_type and name in (None, o.get("name"))]


def text(cell: Any) -> str:
    """The cell's result, as the notebook shows it."""
    (result,) = outputs(cell, "execute_result")
    return str(result.data["text/plain"])


def test_the_quickstart_notebook_runs_and_shows_what_it_says(kernel: KernelManager) -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    pid = kernel_pid(kernel)
    client = NotebookClient(notebook, km=kernel, timeout=CELL_TIMEOUT_S, startup_timeout=STARTUP_S)
    client.execute(cleanup_kc=True)  # stops the kernel client and shuts the kernel down when done
    cells = {cell.id: cell for cell in notebook.cells if cell.cell_type == "code"}

    assert re.fullmatch(r"<Serve running at http://127\.0\.0\.1:\d+, models \['scale'\]>", text(cells["start"]))
    assert text(cells["call"]) == "array([[2., 4., 6., 8.]], dtype=float32)"
    (printed,) = outputs(cells["concurrent"], "stream", "stdout")
    counts = re.fullmatch(r"64 calls, (\d+) function calls, largest batch (\d+)\n", printed.text)
    assert counts, printed.text
    assert int(counts.group(1)) < 64 and int(counts.group(2)) > 1  # calls made together were batched
    assert text(cells["concurrent"]) == "True"
    assert text(cells["rebind"]) == "array([[10., 20., 30., 40.]], dtype=float32)"  # re-bound live
    (error,) = outputs(cells["broken"], "error")
    assert error.ename == "ModelExecutionError"
    assert error.evalue == "model 'scale' v1: ValueError: this version is broken"
    assert text(cells["fixed"]) == "array([[2., 4., 6., 8.]], dtype=float32)"
    assert text(cells["stop"]) == "<Serve stopped, models ['scale']>"

    # Logs do not flood cells: one traceback for 32 failing calls, in the cell that made them, of the
    # user's code only; nothing on stderr anywhere else.
    logged = "".join(o.text for cell in cells.values() for o in outputs(cell, "stream", "stderr"))
    assert logged.count("Traceback") == 1, logged
    assert 'raise ValueError("this version is broken")' in logged and "pybind_serve/" not in logged
    assert [cell_id for cell_id, cell in cells.items() if outputs(cell, "stream", "stderr")] == ["broken"]

    assert not kernel.has_kernel or not kernel.is_alive()
    assert segments_of(pid) == []


def test_the_notebook_sets_every_port_of_serve_to_a_free_one() -> None:
    """CI runs the notebook beside other tests: a fixed port (a new ``*_port`` option of `Serve` left at its
    default, say) could collide. Every port option must be passed, as 0 or None."""
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    source = next(cell.source for cell in notebook.cells if cell.get("id") == "start")
    call = next(
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Serve"
    )
    passed = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    ports = {name for name in inspect.signature(Serve).parameters if name.endswith("_port")}
    assert {name: passed.get(name, "default") for name in ports} == {name: passed.get(name) for name in ports}
    assert all(passed[name] in (0, None) for name in ports), passed


SERVE_IN_KERNEL = """
import json
import numpy as np
from pybind_serve import Serve, Tensor, batch
from pybind_serve.integrations.batched import BatchedModel

serve = Serve(http_port=0, grpc_port=0, metrics_port=0)
x, y = Tensor("x", np.float32, (1,)), Tensor("y", np.float32, (1,))
serve.bind("m", batch(lambda x: {"y": x}), inputs=[x], outputs=[y])
serve.run()
assert BatchedModel(serve, "m")(x=[[1.0]])["y"].tolist() == [[1.0]]  # tensors went through shared memory
print(json.dumps([serve.http_port, serve.grpc_port, serve.metrics_port]))
"""


def port_is_free(port: int) -> bool:
    """Whether a server could listen on the port now (with SO_REUSEADDR, as `Serve` does)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def run_cell(manager: KernelManager, code: str) -> str:
    """Run ``code`` in the kernel as a notebook cell; what it printed to stdout (fails with its traceback)."""
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=STARTUP_S)
        printed: list[str] = []

        def collect(message: dict[str, Any]) -> None:
            if message["msg_type"] == "stream" and message["content"]["name"] == "stdout":
                printed.append(message["content"]["text"])
            elif message["msg_type"] == "error":
                printed.append("\n".join(message["content"]["traceback"]))

        reply = client.execute_interactive(code, timeout=CELL_TIMEOUT_S, output_hook=collect)
        assert reply["content"]["status"] == "ok", "".join(printed)
    finally:
        client.stop_channels()
    return "".join(printed)


def start_serving(manager: KernelManager) -> list[int]:
    """Run a `Serve` in the kernel (as a notebook cell would); the ports it listens on."""
    return list(json.loads(run_cell(manager, SERVE_IN_KERNEL)))


@pytest.mark.parametrize("how", ["sigkill", "restart"])
def test_a_kernel_that_dies_while_serving_leaves_nothing_behind(kernel: KernelManager, how: str) -> None:
    pid = kernel_pid(kernel)
    ports = start_serving(kernel)
    front = descendants(pid)
    assert front and segments_of(pid), "the kernel serves no front process or no shared memory"
    assert not any(port_is_free(port) for port in ports)
    if how == "sigkill":
        os.kill(pid, signal.SIGKILL)
    else:
        kernel.restart_kernel(now=False)  # what Jupyter's "Restart kernel" does: ask, wait, then kill
    assert wait_until(lambda: not running(front), GONE_S), f"the front outlived the kernel: {running(front)}"
    assert wait_until(lambda: not segments_of(pid), GONE_S), f"shared memory left behind: {segments_of(pid)}"
    assert wait_until(lambda: all(port_is_free(port) for port in ports), GONE_S), f"ports still taken: {ports}"


SPAWN_FROM_KERNEL = """
import json, os
import numpy as np
from pybind_serve import ModelConfig, Serve, Tensor, batch
from pybind_serve.integrations.batched import BatchedModel

os.environ["CUDA_VISIBLE_DEVICES"] = "4"  # pretend: this kernel sees one GPU (nothing here uses CUDA)

class Where:  # defined in the kernel's __main__: it must reach the spawned worker by value
    def __init__(self, context):
        self.answer = float(os.environ["CUDA_VISIBLE_DEVICES"]) + 100 * (context.device == "cuda:0")

    @batch
    def __call__(self, x):
        return {"y": x * 0 + self.answer}

serve = Serve(http_port=0, grpc_port=None, metrics_port=None)
x, y = Tensor("x", np.float32, (1,)), Tensor("y", np.float32, (1,))
serve.bind("where", Where, inputs=[x], outputs=[y], config=ModelConfig(devices="all"))
serve.run()
print(json.dumps(BatchedModel(serve, "where")(x=[[1.0]])["y"].tolist()))
serve.stop()
"""


def test_a_class_defined_in_a_notebook_is_built_in_a_worker_on_its_gpu(kernel: KernelManager) -> None:
    # Its GPU ("4") is seen as cuda:0, in the spawned worker.
    assert json.loads(run_cell(kernel, SPAWN_FROM_KERNEL)) == [[104.0]]
