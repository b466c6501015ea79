"""Run PyTriton's own CPU-only functional tests and examples, unchanged, against the shim installed here.

    python compat/pytriton/tools/run_pytriton_tests.py --pytriton /path/to/pytriton-v0.7.0 [--only NAME ...]

Each test's command is read from its ``test.sh`` (the ``python -m ...`` or ``pytest ...`` line, with the script's
variables filled in; its ``pip``/``apt`` lines are skipped: the environment is this one) and run from the
checkout's root (a view of it without its ``pytriton/`` sources, which would shadow the shim) with this
interpreter first on ``PATH``. A table of pass/fail and times is printed, and each
test's output is written to ``--logs``. Needs a checkout of PyTriton v0.7.0 (``git clone -b v0.7.0
https://github.com/triton-inference-server/pytriton``) and the shim installed (``pip install ./compat/pytriton``),
never NVIDIA's PyTriton. The tests also need ``pip install pytest pytest-timeout pytest-asyncio psutil requests``.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

TESTS = [
    "L0_example_add_sub_python",
    "L0_example_add_sub_python_with_optionals",
    "L0_example_add_sub_vertex_ai",
    "L0_example_identity_python",
    "L0_example_multiple_models_example",
    "L0_example_use_parameters_and_headers",
    "L0_example_simple_python_remote_mode",
    "L0_decoupled_mode",
    "L0_network_timeouts",
    "L0_remote_life_cycle",
    "L0_tritons_cohabitation",
    "L0_inference_with_variable_io_size",
    "L0_model_error_handling",
    "L0_run_in_thread",
    "L0_token_based_access_restriction",
    "L0_triton_close_on_parent_death",
    "L0_resources_released_after_signals",
    "L0_response_cache",
    "L0_warmup_functionality",
    "L0_run_on_python_3-11",
    "L1_futures_client_stress",
]


def command_of(test_sh: pathlib.Path, root: pathlib.Path) -> list[str]:
    """The test's command from its test.sh: continuation lines joined, the script's variables filled in."""
    text = test_sh.read_text().replace("\\\n", " ")
    directory = test_sh.parent.relative_to(root).as_posix()
    module = directory.replace("/", ".") + ".test"
    for line in text.splitlines():
        line = line.strip()
        if re.match(r"^(python3?\s+-m|pytest)\b", line):
            line = line.replace('"${TEST_MODULE}"', module).replace("${TEST_MODULE}", module)
            line = line.replace("${THIS_SCRIPT_DIR}", directory)
            return shlex.split(line)
    raise ValueError(f"{test_sh}: no python -m / pytest line")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pytriton", type=pathlib.Path, required=True, help="a checkout of PyTriton v0.7.0")
    parser.add_argument("--only", nargs="*", default=None, help="run only these tests")
    parser.add_argument("--timeout-s", type=float, default=600, help="the most one test may take")
    parser.add_argument("--logs", type=pathlib.Path, default=pathlib.Path("pytriton-test-logs"))
    args = parser.parse_args()
    root = args.pytriton.resolve()
    probe = subprocess.run(
        [sys.executable, "-c", "import pytriton; print(getattr(pytriton, 'IS_PYBIND_SERVE', False))"],
        capture_output=True,
        text=True,
        cwd="/",
    )
    if probe.stdout.strip() != "True":
        print("the `pytriton` importable here is not pybind-serve-pytriton: pip install ./compat/pytriton first")
        return 2
    args.logs.mkdir(parents=True, exist_ok=True)
    # Run from a view of the checkout without its `pytriton/` sources: run from the root itself, `python -m`
    # would import those (the working directory comes first on sys.path) instead of the installed shim.
    view = pathlib.Path(tempfile.mkdtemp(prefix="pytriton-view-"))
    for entry in root.iterdir():
        if entry.name != "pytriton":
            (view / entry.name).symlink_to(entry)
    env = dict(os.environ, PATH=f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("PYTHONPATH", None)
    # The async tests (L0_network_timeouts) carry no asyncio mark: without this pytest skips them (pytest < 9) or
    # fails them (pytest 9); with it they run, which is stricter than PyTriton's own runs.
    env["PYTEST_ADDOPTS"] = f"{env.get('PYTEST_ADDOPTS', '')} --asyncio-mode=auto".strip()
    results = []
    for name in args.only or TESTS:
        command = command_of(root / "tests" / "functional" / name / "test.sh", root)
        started = time.monotonic()
        try:
            run = subprocess.run(
                command, cwd=view, env=env, capture_output=True, text=True, timeout=args.timeout_s, check=False
            )
            code, output = run.returncode, run.stdout + run.stderr
        except subprocess.TimeoutExpired as exc:
            code, output = -999, f"{exc.stdout or ''}{exc.stderr or ''}\nTIMED OUT after {args.timeout_s} s"
            output = output if isinstance(output, str) else str(output)
        took = time.monotonic() - started
        (args.logs / f"{name}.log").write_text(f"$ {shlex.join(command)}\n{output}")
        results.append((name, code, took))
        print(f"{'PASS' if code == 0 else 'FAIL'}  {name}  ({took:.1f} s, exit {code})", flush=True)
    shutil.rmtree(view)
    failed = [name for name, code, _ in results if code != 0]
    print("\n| test | result | seconds |\n| --- | --- | --- |")
    for name, code, took in results:
        print(f"| {name} | {'pass' if code == 0 else f'FAIL (exit {code})'} | {took:.1f} |")
    print(f"\n{len(results) - len(failed)} of {len(results)} passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
