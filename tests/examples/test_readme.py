"""The README's code runs: the Quick start block serves and answers, and the commands CI reads are there."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    """The README text under ``## title``, up to the next ``## `` heading."""
    found = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.MULTILINE | re.DOTALL)
    assert found, f"README.md has no '## {title}' section"
    return found.group(1)


def block_after(marker: str) -> str:
    """The body of the fenced block right after ``marker`` (the marker's next line opens the fence)."""
    found = re.search(rf"^{re.escape(marker)}\n```[a-z]*\n(.*?)^```$", README, re.MULTILINE | re.DOTALL)
    assert found, f"README.md has no code block right after {marker}"
    return found.group(1)


def infer_add_sub(serve: Any) -> dict[str, list[float]]:
    """What the Quick start's blocking ``serve.serve()`` becomes: one request, over plain HTTP."""
    body = {
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]},
            {"name": "b", "datatype": "FP32", "shape": [1, 2], "data": [3, 4]},
        ]
    }
    response = httpx.post(f"{serve.http_url}/v2/models/add_sub/infer", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return {output["name"]: output["data"] for output in response.json()["outputs"]}


def test_quick_start_runs() -> None:
    blocks = re.findall(r"^```python\n(.*?)^```$", section("Quick start"), re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, "the Quick start should hold one python block"
    code = blocks[0]
    # Free ports instead of Triton's, and one request instead of blocking until Ctrl-C.
    assert code.count("Serve()") == 1 and code.count("serve.serve()") == 1, code
    code = code.replace("Serve()", "Serve(http_port=0, grpc_port=0, metrics_port=0)")
    code = code.replace("serve.serve()", "serve.run(); result = infer_add_sub(serve)")
    namespace: dict[str, Any] = {"__name__": "readme_quick_start", "infer_add_sub": infer_add_sub}
    exec(compile(code, "README.md#quick-start", "exec"), namespace)
    assert namespace["result"] == {"add": [4.0, 6.0], "sub": [-2.0, -2.0]}
    assert not namespace["serve"].is_ready()  # the with block stopped it


def test_run_command_starts_the_main_example() -> None:
    command = block_after("<!-- run-command -->").strip()
    assert len(command.splitlines()) == 1, command
    assert "pip install -e ." in command
    script = shlex.split(command)[-1]
    assert script == "examples/add_sub/server.py"
    assert (ROOT / script).is_file()


def test_ci_runs_the_readmes_test_command() -> None:
    command = block_after("<!-- test-command -->").strip()
    assert len(command.splitlines()) == 1, command
    assert "pip install -e '.[test]'" in command and command.endswith("python -m pytest"), command
    ci = (ROOT / ".ci" / "run").read_text()
    found = re.search(r"^test_command=\$\(sed -n '([^']+)' README\.md\)$", ci, re.MULTILINE)
    assert found, ".ci/run no longer reads the test command from README.md with sed"
    extracted = subprocess.run(
        ["sed", "-n", found.group(1), "README.md"], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
    ).stdout
    assert extracted.strip() == command, "CI would run another command than the README's"
    assert 'timeout 1200 bash -c "$test_command"' in ci
