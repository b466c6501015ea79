"""Run every fault probe once and print the table of what happened: ``python -m tests.faults.report``.

With ``PYBIND_SERVE_UNDER_TEST=<a checkout's root>`` the servers run that version of pybind_serve instead (the
probes leave out the options it does not know): how the closing note of the reliability work compared before
and after, in one run of the same probes.
"""

from __future__ import annotations

import os
import sys
import time

from .harness import Outcome
from .probes import PROBES

HEADER = (
    "| probe | requests sent | answered ok | answered with error | lost | leaks | notes |\n"
    "| --- | --- | --- | --- | --- | --- | --- |"
)


def main() -> None:
    under_test = os.environ.get("PYBIND_SERVE_UNDER_TEST", "this checkout")
    print(f"pybind_serve under test: {under_test}\n\n{HEADER}", flush=True)
    started = time.monotonic()
    for probe, modes in PROBES:
        for mode in modes:
            try:
                outcome = probe(mode)
            except Exception as exc:  # a probe that cannot finish is a finding too
                outcome = Outcome(f"{probe.__name__} ({mode})", notes=[f"the probe failed: {exc!r}"])
            print(outcome.row(), flush=True)
    print(f"\n{time.monotonic() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
