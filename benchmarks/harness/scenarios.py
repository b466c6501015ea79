"""What the suite measures: the load cases of scenarios a, b and c, and the sample inputs of the models.

Scenarios d (startup) and e (memory) are measured on every start of a system (see ``launch``), so they have
no cases here.
"""

from __future__ import annotations

from dataclasses import dataclass

SLEEPY_MS = 20.0  # scenario c: the model costs this much per batch, whatever its size
SLEEPY_MAX_BATCH = 64
IDEAL_SLEEPY_REQ_S = SLEEPY_MAX_BATCH * 1000 / SLEEPY_MS  # 3,200: every batch full, back to back
IDENTITY_MAX_BATCH = 8
ADD_SUB_ELEMENTS = 16
ADD_SUB_CONCURRENCY = (1, 8, 64)
IDENTITY_CONCURRENCY = 4
SLEEPY_CONCURRENCY = 256

# Kinds of case: a system says which kinds each of its fronts runs (``systems.Front.kinds``).
KINDS = ("a", "b", "b-shm", "c")
NOT_SUPPORTED = "n/a (not supported yet)"


class MeasureError(RuntimeError):
    """A measurement or a start that gave no figures; the message says why."""

    @classmethod
    def with_output(cls, why: str, output: str, lines: int = 15) -> MeasureError:
        """The error, with the last ``lines`` of the program's output."""
        return cls(f"{why}:\n" + "\n".join(output.strip().splitlines()[-lines:]))


@dataclass(frozen=True)
class Case:
    """One load to measure: a model at a concurrency, for ``window_s`` per perf_analyzer window (three windows
    are measured, and the asyncio loop measures as long)."""

    kind: str
    name: str
    model: str
    concurrency: int
    shapes: tuple[str, ...]  # perf_analyzer --shape NAME:DIMS, for the inputs of variable shape
    window_s: float
    shm_bytes: int = 0  # > 0: inputs and outputs through system shared memory, this many bytes per output

    @property
    def scenario(self) -> str:
        return self.kind[0]


def plan(window_s: float, identity_mib: float, kinds: frozenset[str] = frozenset(KINDS)) -> list[Case]:
    """The cases of scenarios a, b and c, in the order they are run and shown."""
    elements = int(identity_mib * (1 << 20)) // 4
    identity = f"identity {identity_mib:g} MiB c={IDENTITY_CONCURRENCY}"
    add_sub = ("a:16", "b:16")
    cases = [Case("a", f"add_sub c={c}", "add_sub", c, add_sub, window_s) for c in ADD_SUB_CONCURRENCY]
    cases += [
        # 16 MiB requests take long on 2 cores: longer windows, so that each holds more than a few of them
        Case("b", identity, "identity", IDENTITY_CONCURRENCY, (f"x:{elements}",), 2 * window_s),
        Case("b-shm", f"{identity}, system shm", "identity", IDENTITY_CONCURRENCY, (f"x:{elements}",),
             2 * window_s, shm_bytes=4 * elements),
        Case("c", f"sleepy {SLEEPY_MS:g} ms c={SLEEPY_CONCURRENCY}", "sleepy", SLEEPY_CONCURRENCY, (), window_s),
    ]  # fmt: skip
    return [case for case in cases if case.kind in kinds]


def sample_inputs(model: str) -> dict[str, list[float]]:
    """One request's inputs for the models the asyncio loop and the first request call (one row each)."""
    if model == "add_sub":
        return {"a": [float(i) for i in range(ADD_SUB_ELEMENTS)], "b": [1.0] * ADD_SUB_ELEMENTS}
    if model == "sleepy":
        return {"x": [1.0, 2.0, 3.0, 4.0]}
    raise ValueError(f"no sample inputs for model {model!r}")


def kserve_body(model: str) -> dict[str, object]:
    """A KServe v2 JSON infer request of one row with ``model``'s sample inputs."""
    inputs = [
        {"name": name, "datatype": "FP32", "shape": [1, len(values)], "data": values}
        for name, values in sample_inputs(model).items()
    ]
    return {"inputs": inputs}
