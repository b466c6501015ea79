"""The response cache on a real server: identical requests run the function once, over HTTP and gRPC alike;
any difference in the inputs' bytes or shapes or in the custom parameters misses; each request still gets the
outputs it asked for, its own id, and its shared-memory outputs; a small cache evicts; failures are not cached;
a re-bound model starts afresh; the statistics, the metrics and /config say what happened."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing import resource_tracker
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm

from pybind_serve import ConfigurationError, ModelConfig, Request, Serve, Tensor, batch
from tests.conftest import module_server
from tests.integration.conftest import WAIT_S

# tritonclient's regions start Python's resource tracker: start it before the leak checks take their snapshots.
resource_tracker.ensure_running()

X = [Tensor("x", np.float32, (-1,))]
OUTPUTS = [Tensor("double", np.float32, (-1,)), Tensor("tag", bytes, (1,))]
CACHED = ModelConfig(max_batch_size=8, response_cache=True)


class Counted:
    """An undecorated model function that counts the requests it ran (thread-safe) and can fail on demand:
    ``double`` is twice ``x``; ``tag`` the request's ``tag`` parameter; ``x`` of 13 raises."""

    def __init__(self) -> None:
        self.requests = 0
        self._lock = threading.Lock()

    def __call__(self, requests: list[Request]) -> list[dict[str, np.ndarray]]:
        with self._lock:
            self.requests += len(requests)
        if any((r["x"] == 13).any() for r in requests):
            raise ValueError("13 is unlucky")
        return [
            {"double": r["x"] * 2, "tag": np.array([[str(r.parameters.get("tag", "")).encode()]], dtype=object)}
            for r in requests
        ]


COUNTED = Counted()
_values = itertools.count(100)


def fresh(width: int = 3) -> np.ndarray:
    """A (1, width) input no other test of the module sends (so none of them finds it in the cache)."""
    return np.full((1, width), float(next(_values)), dtype=np.float32)


def setup(serve: Serve) -> None:
    serve.bind("m", COUNTED, inputs=X, outputs=OUTPUTS, config=CACHED)
    serve.bind("plain", Counted(), inputs=X, outputs=OUTPUTS, config=ModelConfig(max_batch_size=8))


def warm_up(serve: Serve) -> None:
    with httpclient.InferenceServerClient(f"127.0.0.1:{serve.http_port}", network_timeout=WAIT_S) as client:
        for model in ("m", "plain"):
            client.infer(model, [_http_input(np.zeros((1, 1), np.float32))])


@pytest.fixture(scope="module")
def serve() -> Iterator[Serve]:
    with module_server(setup, warm_up, system_shared_memory=True) as server:
        yield server


@pytest.fixture
def http_client(serve: Serve) -> Iterator[httpclient.InferenceServerClient]:
    with httpclient.InferenceServerClient(f"127.0.0.1:{serve.http_port}", network_timeout=WAIT_S) as client:
        yield client


@pytest.fixture
def grpc_client(serve: Serve) -> Iterator[grpcclient.InferenceServerClient]:
    assert serve.grpc_url is not None
    client = grpcclient.InferenceServerClient(serve.grpc_url)
    try:
        yield client
    finally:
        client.close()


def _http_input(x: np.ndarray, binary: bool = True) -> httpclient.InferInput:
    tensor = httpclient.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    return tensor


def _grpc_input(x: np.ndarray) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return tensor


def http_infer(client: httpclient.InferenceServerClient, x: np.ndarray, model: str = "m", **options: Any) -> Any:
    return client.infer(model, [_http_input(x)], **options)


def grpc_infer(client: grpcclient.InferenceServerClient, x: np.ndarray, model: str = "m", **options: Any) -> Any:
    return client.infer(model, [_grpc_input(x)], **options)


def runs(action: Callable[[], Any]) -> int:
    """How many requests the cached model's function ran during ``action``."""
    before = COUNTED.requests
    action()
    return COUNTED.requests - before


def counter(serve: Serve, name: str, model: str = "m") -> float:
    """A counter's value from /metrics (read as text: prometheus_client's parser renames counters)."""
    assert serve.metrics_url is not None
    line_start = f'{name}{{model="{model}",version="1"}} '
    text = httpx.get(serve.metrics_url, timeout=WAIT_S).text
    matches = [line for line in text.splitlines() if line.startswith(line_start)]
    assert len(matches) == 1, f"expected one line {line_start!r} in:\n{text}"
    return float(matches[0].rsplit(" ", 1)[1])


def stats(serve: Serve, model: str = "m") -> dict[str, Any]:
    answer = httpx.get(f"{serve.http_url}/v2/models/{model}/stats", timeout=WAIT_S).json()
    return dict(answer["model_stats"][0]["inference_stats"])


def test_ten_identical_requests_run_the_function_once(http_client: httpclient.InferenceServerClient) -> None:
    # PyTriton's L0_response_cache: ten identical requests, one call of the function.
    x = fresh(16)
    results: list[Any] = []
    assert runs(lambda: results.extend(http_infer(http_client, x) for _ in range(10))) == 1
    for result in results:
        np.testing.assert_array_equal(result.as_numpy("double"), x * 2)


def test_http_and_grpc_share_the_cache(
    http_client: httpclient.InferenceServerClient, grpc_client: grpcclient.InferenceServerClient
) -> None:
    x = fresh()
    assert runs(lambda: grpc_infer(grpc_client, x)) == 1
    assert runs(lambda: np.testing.assert_array_equal(grpc_infer(grpc_client, x).as_numpy("double"), x * 2)) == 0
    assert runs(lambda: np.testing.assert_array_equal(http_infer(http_client, x).as_numpy("double"), x * 2)) == 0


def test_a_hit_is_encoded_for_its_own_request(serve: Serve) -> None:
    """The id, the outputs asked for and their encoding are the new request's, not the cached one's."""
    x = fresh().tolist()
    body = {"id": "first", "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": x[0]}]}
    with httpx.Client(base_url=serve.http_url, timeout=WAIT_S) as client:
        first = client.post("/v2/models/m/infer", json=body).json()
        before = COUNTED.requests
        again = client.post("/v2/models/m/infer", json={**body, "id": "second", "outputs": [{"name": "tag"}]}).json()
        assert COUNTED.requests == before
    assert [o["name"] for o in first["outputs"]] == ["double", "tag"]
    assert first["id"] == "first" and again["id"] == "second"
    assert [o["name"] for o in again["outputs"]] == ["tag"]
    # the binary tensor data extension's own parameter does not make the request another one
    binary = {**body, "parameters": {"binary_data_output": True}}
    with httpx.Client(base_url=serve.http_url, timeout=WAIT_S) as client:
        answer = client.post("/v2/models/m/infer", json=binary)
    assert COUNTED.requests == before
    assert answer.status_code == 200 and "inference-header-content-length" in answer.headers


def test_binary_and_json_outputs_of_one_cached_response(http_client: httpclient.InferenceServerClient) -> None:
    x = fresh()
    as_json = [httpclient.InferRequestedOutput("double", binary_data=False)]
    as_binary = [httpclient.InferRequestedOutput("double", binary_data=True)]
    first = http_infer(http_client, x, outputs=as_json)
    second = runs(
        lambda: np.testing.assert_array_equal(http_infer(http_client, x, outputs=as_binary).as_numpy("double"), x * 2)
    )
    assert second == 0
    np.testing.assert_array_equal(first.as_numpy("double"), x * 2)


def test_different_bytes_shapes_or_parameters_miss(http_client: httpclient.InferenceServerClient) -> None:
    x = fresh(4)
    assert runs(lambda: http_infer(http_client, x)) == 1
    other_bytes = x.copy()
    other_bytes[0, 3] += 0.5
    assert runs(lambda: http_infer(http_client, other_bytes)) == 1
    assert runs(lambda: http_infer(http_client, x.reshape(2, 2))) == 1  # same bytes, another shape
    tagged = http_infer(http_client, x, parameters={"tag": "a"})
    assert tagged.as_numpy("tag").tolist() == [[b"a"]]
    assert runs(lambda: http_infer(http_client, x, parameters={"tag": "b"})) == 1
    assert runs(lambda: http_infer(http_client, x, parameters={"tag": "a"})) == 0
    # the scheduler's parameters and the protocol's do not make a request different
    assert runs(lambda: http_infer(http_client, x, priority=1, timeout=5_000_000)) == 0


def test_failures_are_not_cached(http_client: httpclient.InferenceServerClient) -> None:
    unlucky = np.full((1, 2), 13.0, dtype=np.float32)
    for _ in range(2):
        before = COUNTED.requests
        with pytest.raises(Exception, match="13 is unlucky"):
            http_infer(http_client, unlucky)
        assert COUNTED.requests == before + 1


def test_a_model_without_the_cache_runs_every_request(
    serve: Serve, http_client: httpclient.InferenceServerClient
) -> None:
    x = fresh()
    before = stats(serve, "plain")
    for _ in range(3):
        http_infer(http_client, x, model="plain")
    after = stats(serve, "plain")
    assert after["compute_infer"]["count"] - before["compute_infer"]["count"] == 3
    assert after["cache_hit"]["count"] == after["cache_miss"]["count"] == 0


def test_statistics_and_metrics_count_hits_and_misses(
    serve: Serve, http_client: httpclient.InferenceServerClient, grpc_client: grpcclient.InferenceServerClient
) -> None:
    before = stats(serve)
    x = fresh()
    for _ in range(3):
        http_infer(http_client, x)
    after = stats(serve)
    assert after["cache_miss"]["count"] - before["cache_miss"]["count"] == 1
    assert after["cache_hit"]["count"] - before["cache_hit"]["count"] == 2
    assert after["success"]["count"] - before["success"]["count"] == 3
    assert after["compute_infer"]["count"] - before["compute_infer"]["count"] == 1  # hits are not computed
    assert after["cache_hit"]["ns"] > before["cache_hit"]["ns"] and after["cache_miss"]["ns"] > 0
    grpc_stats = grpc_client.get_inference_statistics("m", as_json=True)["model_stats"][0]["inference_stats"]
    assert int(grpc_stats["cache_hit"]["count"]) == after["cache_hit"]["count"]
    assert int(grpc_stats["cache_miss"]["count"]) == after["cache_miss"]["count"]
    assert counter(serve, "nv_cache_num_hits_per_model") == after["cache_hit"]["count"]
    assert counter(serve, "nv_cache_num_misses_per_model") == after["cache_miss"]["count"]
    assert counter(serve, "nv_cache_hit_duration_per_model") >= 0
    assert counter(serve, "nv_cache_miss_duration_per_model") > 0
    with pytest.raises(AssertionError):  # a model without the cache has no cache figures
        counter(serve, "nv_cache_num_misses_per_model", "plain")


def test_config_reports_the_cache(serve: Serve, grpc_client: grpcclient.InferenceServerClient) -> None:
    config = httpx.get(f"{serve.http_url}/v2/models/m/config", timeout=WAIT_S).json()
    assert config["response_cache"] == {"enable": True}
    plain = httpx.get(f"{serve.http_url}/v2/models/plain/config", timeout=WAIT_S).json()
    assert plain["response_cache"] == {"enable": False}
    assert grpc_client.get_model_config("m").config.response_cache.enable is True


def test_shared_memory_inputs_and_outputs_stay_correct(
    serve: Serve, http_client: httpclient.InferenceServerClient
) -> None:
    """Inputs read from a client's region are hashed as they are; a hit writes its outputs into the region that
    the new request names."""
    x = fresh(4)
    tag = f"pbs_rc_{os.getpid()}"
    regions = {
        "in": shm.create_shared_memory_region(f"{tag}_in", f"/{tag}_in", x.nbytes),
        "out": shm.create_shared_memory_region(f"{tag}_out", f"/{tag}_out", 2 * x.nbytes),
    }
    try:
        shm.set_shared_memory_region(regions["in"], [x])
        http_client.register_system_shared_memory("rc_in", f"/{tag}_in", x.nbytes)
        http_client.register_system_shared_memory("rc_out", f"/{tag}_out", 2 * x.nbytes)
        for offset in (0, x.nbytes):  # the miss writes the first half, the hit the second
            tensor = httpclient.InferInput("x", [1, 4], "FP32")
            tensor.set_shared_memory("rc_in", x.nbytes)
            output = httpclient.InferRequestedOutput("double")
            output.set_shared_memory("rc_out", x.nbytes, offset=offset)
            ran = runs(lambda: http_client.infer("m", [tensor], outputs=[output]))  # noqa: B023
            assert ran == (1 if offset == 0 else 0)
        written = shm.get_contents_as_numpy(regions["out"], np.float32, [2, 4])
        np.testing.assert_array_equal(written, np.vstack([x * 2, x * 2]))
        # the same bytes sent in the request body hit the entry the shared-memory request made
        assert runs(lambda: http_infer(http_client, x)) == 0
    finally:
        http_client.unregister_system_shared_memory()
        for handle in regions.values():
            shm.destroy_shared_memory_region(handle)


def test_a_small_cache_evicts_the_least_recently_used(make_serve: Callable[..., Serve]) -> None:
    counted = Counted()
    serve = make_serve(response_cache_bytes=6_000, grpc_port=None)
    serve.bind("m", counted, inputs=X, outputs=OUTPUTS, config=CACHED)
    serve.run()
    a, b, c = (np.full((1, 500), v, dtype=np.float32) for v in (1.0, 2.0, 3.0))  # 2,000 bytes of outputs each
    huge = np.ones((1, 2_000), dtype=np.float32)  # 8,000 bytes: bigger than the whole cache
    with httpclient.InferenceServerClient(f"127.0.0.1:{serve.http_port}", network_timeout=WAIT_S) as client:

        def ran(x: np.ndarray) -> int:
            before = counted.requests
            np.testing.assert_array_equal(http_infer(client, x).as_numpy("double"), x * 2)
            return counted.requests - before

        assert [ran(a), ran(b), ran(a)] == [1, 1, 0]  # a and b fit; a is now the most recently used
        assert ran(c) == 1  # evicts b, the least recently used
        assert [ran(a), ran(c), ran(b)] == [0, 0, 1]
        assert [ran(huge), ran(huge)] == [1, 1]  # never stored


def test_rebinding_a_model_drops_its_cached_responses(make_serve: Callable[..., Serve]) -> None:
    serve = make_serve(grpc_port=None)
    serve.bind("m", batch(lambda x: {"y": x + 1}), inputs=X, outputs=[Tensor("y", np.float32, (-1,))], config=CACHED)
    serve.run()
    x = np.ones((1, 2), dtype=np.float32)
    with httpclient.InferenceServerClient(f"127.0.0.1:{serve.http_port}", network_timeout=WAIT_S) as client:
        assert http_infer(client, x).as_numpy("y").tolist() == [[2, 2]]
        serve.bind(
            "m", batch(lambda x: {"y": x + 10}), inputs=X, outputs=[Tensor("y", np.float32, (-1,))], config=CACHED
        )
        assert http_infer(client, x).as_numpy("y").tolist() == [[11, 11]]


def test_each_front_keeps_its_own_cache(make_serve: Callable[..., Serve]) -> None:
    """With two fronts a request misses at most once per front; the statistics add both fronts up."""
    counted = Counted()
    serve = make_serve(fronts=2, grpc_port=None)
    serve.bind("m", counted, inputs=X, outputs=OUTPUTS, config=CACHED)
    serve.run()
    x = np.ones((1, 2), dtype=np.float32)
    for _ in range(8):  # a new connection each time: the kernel spreads them over the fronts
        with httpclient.InferenceServerClient(f"127.0.0.1:{serve.http_port}", network_timeout=WAIT_S) as client:
            http_infer(client, x)
    counts = stats(serve)
    deadline = time.monotonic() + 15
    while counts["cache_hit"]["count"] + counts["cache_miss"]["count"] < 8 and time.monotonic() < deadline:
        time.sleep(0.1)  # a peer slower than PEER_TIMEOUT_S (a loaded machine) is left out of one answer: ask again
        counts = stats(serve)
    assert 1 <= counted.requests <= 2
    assert counts["cache_miss"]["count"] == counted.requests
    assert counts["cache_hit"]["count"] + counts["cache_miss"]["count"] == 8


def test_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="decoupled"):
        ModelConfig(response_cache=True, decoupled=True)
    with pytest.raises(ConfigurationError, match="response_cache must be a bool"):
        ModelConfig(response_cache=1)  # type: ignore[arg-type]
    for bad in (-1, 1.5, "64MiB", True):
        with pytest.raises(ConfigurationError, match="response_cache_bytes must be an int >= 0"):
            Serve(http_port=0, response_cache_bytes=bad)  # type: ignore[arg-type]
    serve = Serve(http_port=0, response_cache_bytes=0)
    with pytest.raises(ConfigurationError, match="response_cache_bytes=0"):
        serve.bind("m", COUNTED, inputs=X, outputs=OUTPUTS, config=CACHED)
    serve.bind("m", COUNTED, inputs=X, outputs=OUTPUTS)  # without the cache: fine
    serve.stop()
