#!/usr/bin/env bash
# Installs what benchmarks/suite.py compares pybind_serve with, into one virtualenv of its own (default
# /tmp/anchor-venv; $ANCHOR_VENV or the first argument moves it), apart from the repository's: PyTriton 0.7 (it
# bundles a Triton server and brings tritonclient), LitServe, uvicorn and Starlette, and a working perf_analyzer
# in <venv>/pabin (through .ci/perf_analyzer.sh: the PyPI "perf-analyzer" package is only a placeholder).
# The suite runs this itself on first use unless --no-setup; about a minute. Idempotent. Needs the network (or a
# pip index that has these packages) and Linux x86-64 (PyTriton's wheels).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
venv=${1:-${ANCHOR_VENV:-/tmp/anchor-venv}}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
quiet() { grep -v 'is ignored' || true; }
"$venv/bin/python" -m pip install -q --upgrade pip 2>&1 | quiet
"$venv/bin/python" -m pip install -q nvidia-pytriton 'tritonclient[all]' litserve 'uvicorn[standard]' starlette 2>&1 | quiet
"$venv/bin/python" -c "import pytriton, litserve" || { echo "PyTriton or LitServe did not install into $venv"; exit 1; }
perf_analyzer=$(bash "$root/.ci/perf_analyzer.sh" "$venv" | tail -1)
libdir=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))")
echo "anchors ready in $venv; perf_analyzer: $perf_analyzer; PyTriton needs LD_LIBRARY_PATH=$libdir (the suite sets it)"
