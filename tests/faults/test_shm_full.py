"""A full /dev/shm (a container's default 64 MiB, here 16 MiB): the batch that does not fit fails with 503 and a
message saying what to do, and the server keeps serving (it used to die of SIGBUS on the first write).

The server runs in a mount namespace of its own with a small tmpfs on /dev/shm (needs root and util-linux's
unshare, as CI has; skipped otherwise)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from pybind_serve import errors
from pybind_serve.transport import shm

ROOT = Path(__file__).resolve().parents[2]
SERVER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from pybind_serve import ModelConfig, Serve, Tensor, batch

    @batch
    def identity(x):
        return {"y": x}

    @batch
    def zeros(n):  # small input, an output of n[0] float32s
        return {"y": np.zeros((n.shape[0], int(n[0, 0])), np.float32)}

    with Serve(http_port=0, grpc_port=None, metrics_port=None) as serve:
        serve.bind("identity", identity, [Tensor("x", np.float32, (-1,))], [Tensor("y", np.float32, (-1,))],
                   config=ModelConfig(max_batch_size=1))
        serve.bind("zeros", zeros, [Tensor("n", np.int64, (1,))], [Tensor("y", np.float32, (-1,))],
                   config=ModelConfig(max_batch_size=1, instances=1))
        serve.run()
        print(serve.http_port, flush=True)
        serve.serve()
    """
)


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "a tmpfs of its own on /dev/shm needs root (a mount namespace)"
    if shutil.which("unshare") is None:
        return "no unshare (util-linux)"
    return None


@pytest.fixture
def small_shm_server(tmp_path: Path) -> Iterator[str]:
    why_not = _why_not()
    if why_not:
        pytest.skip(why_not)
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    command = f"mount -t tmpfs -o size=16m tmpfs /dev/shm && exec {sys.executable} {script}"
    process = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", command],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        port = process.stdout.readline().strip()
        assert port.isdigit(), f"the server did not start (exit {process.poll()})"
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


def _tensor(name: str, array: np.ndarray) -> dict[str, object]:
    datatype = "FP32" if array.dtype == np.float32 else "INT64"
    return {"name": name, "datatype": datatype, "shape": list(array.shape), "parameters": {"binary_data_size": 0}}


def _infer(url: str, model: str, name: str, array: np.ndarray) -> httpx.Response:
    header = {"inputs": [{**_tensor(name, array), "parameters": {"binary_data_size": array.nbytes}}]}
    header_bytes = httpx.Request("POST", "/", json=header).content
    return httpx.post(
        f"{url}/v2/models/{model}/infer",
        content=header_bytes + array.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header_bytes)), "Content-Type": "application/octet-stream"},
        timeout=60,
    )


def test_a_batch_that_does_not_fit_gets_503_and_the_server_goes_on(small_shm_server: str) -> None:
    small = np.ones((1, 1 << 18), np.float32)  # 1 MiB
    assert _infer(small_shm_server, "identity", "x", small).status_code == 200
    big = np.ones((1, 6 << 20), np.float32)  # 24 MiB: more than the whole /dev/shm
    answer = _infer(small_shm_server, "identity", "x", big)
    assert answer.status_code == 503
    assert "shared memory is full" in answer.json()["error"] and "--shm-size" in answer.json()["error"]
    assert _infer(small_shm_server, "identity", "x", small).status_code == 200  # still serving


def test_outputs_that_do_not_fit_fail_their_batch_and_the_worker_lives(small_shm_server: str) -> None:
    answer = _infer(small_shm_server, "zeros", "n", np.array([[6 << 20]], np.int64))  # a 24 MiB output
    assert answer.status_code == 503 and "shared memory is full" in answer.json()["error"]
    time.sleep(0.2)
    assert _infer(small_shm_server, "zeros", "n", np.array([[1024]], np.int64)).status_code == 200


def test_a_segment_that_cannot_be_reserved_is_removed_and_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without root: what the arena does when the file system refuses the pages (the OS answer, simulated)."""

    def no_space(fd: int, offset: int, length: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    arena = shm.Arena(shm.new_owner(), "t")
    with pytest.raises(errors.SharedMemoryFullError, match=r"a segment of 4 MiB does not fit in /dev/shm"):
        arena.allocate(10)
    with pytest.raises(errors.SharedMemoryFullError, match=r"a segment of 4 MiB"):  # no growth remembered
        arena.allocate(10)
    assert not [name for name in os.listdir(shm.SHM_DIR) if name.startswith(arena._prefix)]
    monkeypatch.undo()
    assert arena.allocate(10).nbytes >= 10  # room again: it works
    arena.close()
