"""NVIDIA's `perf_analyzer` load-tests add_sub over HTTP and gRPC, with tensors in the requests and in system
shared memory, in short bounded runs, and finds no errors."""

from __future__ import annotations

import re
import subprocess

import httpx
import pytest

from pybind_serve import Serve

pytestmark = pytest.mark.perf_analyzer

TIMEOUT_S = 120
THROUGHPUT = re.compile(r"^\s*Throughput: ([0-9.]+) infer/sec", re.MULTILINE)
REQUEST_COUNT = re.compile(r"^\s*Request count: (\d+)", re.MULTILINE)
ERROR_LINE = re.compile(r"error|fail|exception|unexpected", re.IGNORECASE)


def metric(serve: Serve, family: str) -> float:
    """Sum of ``family`` over add_sub's series (failures have one per reason, and none before the first)."""
    assert serve.metrics_url is not None
    text = httpx.get(serve.metrics_url, timeout=10).text
    series = re.findall(rf'^{family}\{{model="add_sub",([^}}]*,)?version="1"\}} (\S+)$', text, re.MULTILINE)
    return sum(float(value) for _, value in series)


def run_perf_analyzer(binary: str, protocol: str, url: str, *options: str) -> str:
    command = [
        binary,
        *("-m", "add_sub", "-i", protocol, "-u", url, "--shape", "a:16", "--shape", "b:16"),
        *("--concurrency-range", "4", "--measurement-interval", "1000"),
        # these runs check correctness, not speed: a loose stability bound (up to 10 windows) so that a noisy
        # machine cannot fail them with "Failed to obtain stable measurement"
        *("--max-trials", "10", "--stability-percentage", "500"),
        *options,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"perf_analyzer exited {done.returncode}:\n{output}"
    errors = [line for line in output.splitlines() if ERROR_LINE.search(line)]
    assert not errors, f"perf_analyzer reported errors:\n{output}"
    return output


@pytest.mark.parametrize(
    ("protocol", "options", "batch_size"),
    [
        pytest.param("http", (), 1, id="http-defaults"),
        pytest.param("http", ("--input-data", "zero", "-b", "4"), 4, id="http-zero-batch4"),
        pytest.param("http", ("--input-data", "random", "-b", "4"), 4, id="http-random-batch4"),
        pytest.param("grpc", (), 1, id="grpc-defaults"),
        pytest.param("http", ("--shared-memory", "system"), 1, id="http-system-shm"),
        pytest.param("grpc", ("--shared-memory", "system", "-b", "4"), 4, id="grpc-system-shm-batch4"),
    ],
)
def test_perf_analyzer(
    perf_analyzer: str, serve: Serve, protocol: str, options: tuple[str, ...], batch_size: int
) -> None:
    inferences_before = metric(serve, "nv_inference_count")
    assert inferences_before > 0  # the warm-up request: the metric is there
    failures_before = metric(serve, "nv_inference_request_failure")
    url = serve.grpc_url if protocol == "grpc" else f"127.0.0.1:{serve.http_port}"
    assert url is not None

    output = run_perf_analyzer(perf_analyzer, protocol, url, *options)

    throughput = THROUGHPUT.search(output)
    assert throughput, f"no 'Throughput: N infer/sec' line:\n{output}"
    assert float(throughput.group(1)) > 0, output
    assert f"Batch size: {batch_size}" in output
    requests = REQUEST_COUNT.search(output)
    assert requests and int(requests.group(1)) > 0, output
    # The server saw at least the measured requests, each of batch_size rows, and failed none.
    assert metric(serve, "nv_inference_count") - inferences_before >= batch_size * int(requests.group(1))
    assert metric(serve, "nv_inference_request_failure") == failures_before
