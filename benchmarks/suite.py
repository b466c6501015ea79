"""The benchmark suite: pybind_serve over HTTP and gRPC beside PyTriton, LitServe and the bare uvicorn +
Starlette ceiling, on loopback, in one run; one Markdown table of throughput, p50/p99 latency, startup and
memory, with pybind_serve's ratio to each anchor. benchmarks/README.md says what each scenario measures.

    python benchmarks/suite.py            # everything, about 10 minutes on 2 cores (installs the anchors)
    python benchmarks/suite.py --smoke    # seconds: every scenario on our server only (CI runs this)
    python benchmarks/suite.py --help

Results: benchmarks/results/local/suite.json and suite.md (``--smoke``: suite-smoke.*), which git ignores;
``--out benchmarks/results`` updates the figures kept in the repository.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

if __name__ == "__main__":
    missing = [name for name in ("httpx", "numpy", "zmq", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:  # our server and the ceiling run on this interpreter
        sys.exit(f"no {', '.join(missing)} here: run the suite from the repository's virtualenv (see README.md)")
    from benchmarks.harness.cli import main

    sys.exit(main())
