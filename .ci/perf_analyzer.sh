#!/usr/bin/env bash
# Puts a working perf_analyzer in $1/pabin (default .venv): the PyPI "perf-analyzer" package is only a
# placeholder, so this takes the binary from the tritonclient 2.44.0 wheel, with the two libraries it needs:
# libb64.so.0d (Debian's libb64-0d, unpacked without root) and libcudart.so.12 (nvidia-cuda-runtime-cu12).
# benchmarks/anchors/setup.sh uses it for the anchors' virtualenv too. Idempotent; prints the wrapper's path.
set -euo pipefail
venv=$(cd "${1:-.venv}" && pwd)
out="$venv/pabin"
mkdir -p "$out"
if [ ! -x "$out/perf_analyzer.bin" ]; then
  tmp=$(mktemp -d)
  "$venv/bin/python" -m pip download -q --no-deps -d "$tmp" tritonclient==2.44.0 2>&1 | grep -v 'is ignored' || true
  (cd "$tmp" && "$venv/bin/python" -m zipfile -e tritonclient-2.44.0-*.whl x >/dev/null)
  cp "$tmp/x/tritonclient-2.44.0.data/data/bin/perf_analyzer" "$out/perf_analyzer.bin"
  chmod +x "$out/perf_analyzer.bin"
  rm -rf "$tmp"
fi
"$venv/bin/python" -m pip install -q nvidia-cuda-runtime-cu12 2>&1 | grep -v 'is ignored' || true
libs="$out/lib"
if [ ! -e "$libs/libb64.so.0d" ]; then
  if [ -z "${PA_FORCE_LOCAL_LIBB64:-}" ] && ldconfig -p | grep -q libb64.so.0d; then
    mkdir -p "$libs"
  else
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download libb64-0d >/dev/null 2>&1) || (apt-get update -qq >/dev/null 2>&1 && cd "$tmp" && apt-get download libb64-0d >/dev/null)
    dpkg -x "$tmp"/libb64-0d_*.deb "$tmp/root"
    mkdir -p "$libs"
    cp "$tmp"/root/usr/lib/*/libb64.so.0d "$libs/"
    rm -rf "$tmp"
  fi
fi
cudart=$("$venv/bin/python" -c "import nvidia.cuda_runtime, os; print(os.path.join(list(nvidia.cuda_runtime.__path__)[0], 'lib'))")
abs_libs=$(cd "$libs" && pwd)
abs_bin=$(cd "$out" && pwd)/perf_analyzer.bin
cat > "$out/perf_analyzer" <<WRAP
#!/bin/sh
LD_LIBRARY_PATH=$abs_libs:$cudart\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH} exec $abs_bin "\$@"
WRAP
chmod +x "$out/perf_analyzer"
help=$("$out/perf_analyzer" --help 2>&1 || true)
grep -qi usage <<<"$help" || { echo "perf_analyzer does not run:"; echo "$help" | head -20; exit 1; }
echo "$(cd "$out" && pwd)/perf_analyzer"
