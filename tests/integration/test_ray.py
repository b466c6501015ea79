"""The Ray backend on a real Ray cluster of three nodes on loopback (`ray.cluster_utils.Cluster`, one CPU each):
models bound through `RayBackend` answer tritonclient over HTTP and gRPC, their instances land on the nodes their
resources name, the network transport carries tensors right, and a worker actor or a whole node lost mid-load
leaves no accepted request unanswered while the model stays ready and its instance is recreated.

Skipped where Ray is not installed (the ``ray`` extra). The cluster is the module's (starting one takes seconds);
its daemons (gcs_server, raylets, Ray's monitors) are children of this process for the whole module, and a test
that adds a node starts one more raylet: the leak check below is conftest's, except that it leaves out the
processes of Ray's own package. Once the cluster is shut down, the module checks that none of them is left.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

# tests/conftest.py keeps Ray's nodes and this driver on loopback (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0).
ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'pybind_serve[ray]')")
cluster_utils = pytest.importorskip("ray.cluster_utils")
httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")

from pybind_serve import Autoscale, ModelConfig, RayBackend, Resources, Serve, Tensor  # noqa: E402

from ..conftest import child_pids, descendants_of, ours_in_shm, wait_until  # noqa: E402
from . import ray_models  # noqa: E402

RAY_DIR = os.path.dirname(ray.__file__)
LOOPBACK = "127.0.0.1"
NODE = {"num_cpus": 1, "node_ip_address": LOOPBACK, "include_dashboard": False}
# Dead nodes noticed within about 1.5 s (Ray's defaults take 15 s or more).
HEALTH = {"health_check_period_ms": 500, "health_check_failure_threshold": 3}


def ray_process(pid: int) -> bool:
    """Whether a process runs a program of Ray's own package (a raylet, the GCS, Ray's Python daemons)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return RAY_DIR.encode() in file.read()
    except OSError:
        return False


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """conftest's check, less Ray's daemons (the module's cluster's): no segment and no other process is left."""
    shm_before, children_before = ours_in_shm(), child_pids()
    yield

    def leaked() -> set[int]:
        return {pid for pid in child_pids() - children_before if not ray_process(pid)}

    assert wait_until(lambda: not leaked(), 15), f"leaked child processes: {leaked()}"
    assert not ours_in_shm() - shm_before, f"leaked shared memory segments: {sorted(ours_in_shm() - shm_before)}"


@pytest.fixture(scope="module")
def cluster() -> Iterator[cluster_utils.Cluster]:
    head = {**NODE, "resources": {"node_a": 1}, "_system_config": HEALTH}
    started = cluster_utils.Cluster(initialize_head=True, head_node_args=head, shutdown_at_exit=True)
    try:
        started.add_node(**NODE, resources={"node_b": 1, "pool": 1})
        started.add_node(**NODE, resources={"node_c": 1, "pool": 1})
        ray.init(address=started.address, _node_ip_address=LOOPBACK, log_to_driver=False)
        yield started
    finally:
        ray.shutdown()
        started.shutdown()
    assert wait_until(lambda: not [p for p in descendants_of(os.getpid()) if ray_process(p)], 15), (
        "Ray's processes outlived the cluster"
    )


def node_ids() -> dict[str, str]:
    """Each live node's id by the custom resource that names it (node_a, node_b, ...)."""
    found = {}
    for node in ray.nodes():
        if node["Alive"]:
            for name in node["Resources"]:
                if name.startswith("node_"):
                    found[name] = node["NodeID"]
    return found


def serve_on(backend: RayBackend) -> Serve:
    return Serve(http_port=0, grpc_port=0, metrics_port=None, host=LOOPBACK, backend=backend, drain_timeout_s=5)


ECHO_IO = (
    [Tensor("x", np.float32, (-1,)), Tensor("text", bytes, (-1,))],
    [Tensor("y", np.float32, (-1,)), Tensor("text_out", bytes, (-1,)), Tensor("where", bytes, (1,))],
)
WHERE_IO = ([Tensor("x", np.float32, (1,))], [Tensor("where", bytes, (1,)), Tensor("y", np.float32, (1,))])


def http_infer(client: httpclient.InferenceServerClient, x: np.ndarray, text: np.ndarray) -> dict[str, np.ndarray]:
    inputs = [
        httpclient.InferInput("x", list(x.shape), "FP32"),
        httpclient.InferInput("text", list(text.shape), "BYTES"),
    ]
    inputs[0].set_data_from_numpy(x, binary_data=True)
    inputs[1].set_data_from_numpy(text, binary_data=True)
    result = client.infer("echo", inputs)
    return {name: result.as_numpy(name) for name in ("y", "text_out", "where")}


def grpc_infer(client: grpcclient.InferenceServerClient, x: np.ndarray, text: np.ndarray) -> dict[str, np.ndarray]:
    inputs = [
        grpcclient.InferInput("x", list(x.shape), "FP32"),
        grpcclient.InferInput("text", list(text.shape), "BYTES"),
    ]
    inputs[0].set_data_from_numpy(x)
    inputs[1].set_data_from_numpy(text)
    result = client.infer("echo", inputs)
    return {name: result.as_numpy(name) for name in ("y", "text_out", "where")}


def test_tritonclient_http_and_grpc_over_the_network_transport(cluster: cluster_utils.Cluster) -> None:
    """Forced onto the network transport (tcp, CurveZMQ), on node_b as its resources say: numeric and BYTES tensors
    of a few MiB come back exact, over HTTP and gRPC."""
    backend = RayBackend(transport="tcp")
    rng = np.random.default_rng(0)
    with serve_on(backend) as server:
        config = ModelConfig(max_batch_size=8, resources=Resources(num_cpus=0.5, custom={"node_b": 1}))
        server.bind("echo", ray_models.echo, *ECHO_IO, config=config)
        server.run()
        assert [w["transport"] for w in backend.pool.where("echo")] == ["tcp"]
        x = rng.standard_normal((2, 512 << 10)).astype(np.float32)  # 4 MiB
        text = np.array([[b"caf\xc3\xa9", b"", b"\x00\xff" * 1000], [b"a", b"b", b"c"]], dtype=object)
        http = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
        grpc = grpcclient.InferenceServerClient(server.grpc_url)
        try:
            for answer in (http_infer(http, x, text), grpc_infer(grpc, x, text)):
                np.testing.assert_array_equal(answer["y"], x * 2)
                assert answer["text_out"].tolist() == text.tolist()
                node = answer["where"][0, 0].decode().split()[0]
                assert node == node_ids()["node_b"]
            assert http.is_model_ready("echo") and grpc.is_server_ready()
        finally:
            http.close()
            grpc.close()


def test_instances_land_on_the_nodes_their_resources_name(cluster: cluster_utils.Cluster) -> None:
    """Two models pinned by custom resources, one of two instances: each answers from its node, and an instance
    that shares this host's /dev/shm (all of them here) uses shared memory under transport='auto'."""
    backend = RayBackend()
    with serve_on(backend) as server:
        half = {"num_cpus": 0.25}
        on_b = ModelConfig(instances=2, resources=Resources(**half, custom={"node_b": 0.5}))
        on_c = ModelConfig(resources=Resources(**half, custom={"node_c": 1}))
        server.bind("on_b", ray_models.slow_where, *WHERE_IO, config=on_b)
        server.bind("on_c", ray_models.slow_where, *WHERE_IO, config=on_c)
        server.run()
        ids = node_ids()
        where_b, where_c = backend.pool.where("on_b"), backend.pool.where("on_c")
        assert [w["node_id"] for w in where_b] == [ids["node_b"]] * 2
        assert [w["node_id"] for w in where_c] == [ids["node_c"]]
        assert {w["transport"] for w in where_b + where_c} == {"shm"}
        client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
        try:
            for model, node in (("on_b", "node_b"), ("on_c", "node_c")):
                x = httpclient.InferInput("x", [1, 1], "FP32")
                x.set_data_from_numpy(np.ones((1, 1), np.float32))
                result = client.infer(model, [x])
                assert result.as_numpy("where")[0, 0].decode() == ids[node]
                assert result.as_numpy("y").tolist() == [[2.0]]
        finally:
            client.close()


def test_streaming_and_concurrent_models_over_the_network_transport(cluster: cluster_utils.Cluster) -> None:
    """A decoupled model streams its responses, and an async one with concurrency overlaps its batches, through
    workers on the network transport (pybind_serve's own clients this time)."""
    from pybind_serve.client import DecoupledModelClient, ModelClient

    with serve_on(RayBackend(transport="tcp")) as server:
        small = Resources(num_cpus=0.25)
        streaming = ModelConfig(max_batch_size=8, decoupled=True, resources=small)
        text = ([Tensor("text_input", bytes, (1,))], [Tensor("text_output", bytes, (1,))])
        server.bind("words", ray_models.words, *text, config=streaming)
        concurrent = ModelConfig(max_batch_size=1, concurrency=4, resources=small)
        server.bind(
            "overlapped",
            ray_models.overlapped,
            [Tensor("x", np.float32, (1,))],
            [Tensor("y", np.float32, (1,))],
            config=concurrent,
        )
        server.run()
        assert server.grpc_url is not None
        with DecoupledModelClient(f"grpc://{server.grpc_url}", "words") as client:
            said = [out["text_output"].item() for out in client.infer_sample(text_input=np.array([b"one two three"]))]
        assert said == [b"one", b"two", b"three"]
        with ModelClient(server.http_url, "overlapped") as client, ThreadPoolExecutor(4) as pool:
            started = time.monotonic()
            answers = list(pool.map(lambda v: client.infer_sample(x=np.array([v], np.float32))["y"], range(8)))
            took = time.monotonic() - started
        assert [a.tolist() for a in answers] == [[3.0 * v] for v in range(8)]
        assert took < 8 * 0.05, f"8 requests of 50 ms took {took:.2f} s: the batches did not overlap"


def test_a_front_restarted_gets_its_ray_workers_back(cluster: cluster_utils.Cluster) -> None:
    """The front process killed: it is restarted on the same TCP endpoint, the actors reconnect (CurveZMQ again) and
    say hello when it asks, and the model serves again; the actors themselves were not restarted."""
    backend = RayBackend(transport="tcp")
    with serve_on(backend) as server:
        config = ModelConfig(resources=Resources(num_cpus=0.25, custom={"node_c": 1}))
        server.bind("m", ray_models.slow_where, *WHERE_IO, config=config)
        server.run()
        actors = {w["pid"] for w in backend.pool.where("m")}
        assert server._fronts is not None
        before = server._fronts.pids[0]
        os.kill(before, signal.SIGKILL)
        assert wait_until(lambda: server._fronts is not None and server._fronts.pids[0] != before, 10)
        assert wait_until(server.is_ready, 20), "the restarted front did not get its worker back"
        client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
        try:
            x = httpclient.InferInput("x", [1, 1], "FP32")
            x.set_data_from_numpy(np.ones((1, 1), np.float32))
            assert client.infer("m", [x]).as_numpy("where")[0, 0].decode() == node_ids()["node_c"]
        finally:
            client.close()
        assert {w["pid"] for w in backend.pool.where("m")} == actors


def test_an_actor_past_its_execution_timeout_is_killed_and_replaced(cluster: cluster_utils.Cluster) -> None:
    """A batch that hangs past execution_timeout_s=1 fails with 504 (as on one host), saying the instance was killed;
    the owner's pool kills the actor and starts another, under a new identity, which serves the later requests."""
    import httpx

    backend = RayBackend(transport="tcp")
    with serve_on(backend) as server:
        config = ModelConfig(max_batch_size=1, execution_timeout_s=1.0, resources=Resources(num_cpus=0.25))
        server.bind("hangs", ray_models.hangs_on_minus_one, *WHERE_IO, config=config)
        server.run()
        (before,) = backend.pool.where("hangs")
        (doomed,) = backend.pool.actors("hangs")
        url = f"{server.http_url}/v2/models/hangs/infer"

        def infer(value: float) -> httpx.Response:
            body = {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [value]}]}
            return httpx.post(url, json=body, timeout=30.0)

        assert infer(1.0).json()["outputs"][1]["data"] == [2.0]
        started = time.monotonic()
        hung = infer(-1.0)
        assert hung.status_code == 504, hung.text
        assert "execution_timeout_s=1 s; its instance was killed and is replaced" in hung.json()["error"]
        assert time.monotonic() - started < 5

        def replaced() -> bool:
            where = backend.pool.where("hangs", timeout_s=2)
            return len(where) == 1 and where[0]["pid"] != before["pid"]

        assert wait_until(replaced, 30), backend.pool.where("hangs", timeout_s=2)
        took = time.monotonic() - started
        with pytest.raises(ray.exceptions.RayActorError):  # killed, not left to sleep out its 30 s
            ray.get(doomed.where.remote(), timeout=10)
        assert wait_until(server.is_ready, 30)
        assert [infer(float(v)).json()["outputs"][1]["data"] for v in range(3)] == [[1.0], [2.0], [3.0]]
        assert took < 20, f"the actor was replaced {took:.1f} s after the request"


def test_a_resource_no_node_has_fails_bind_at_once(cluster: cluster_utils.Cluster) -> None:
    from pybind_serve import StartupError

    with serve_on(RayBackend()) as server:
        server.run()
        started = time.monotonic()
        config = ModelConfig(resources=Resources(custom={"node_z": 1}))
        with pytest.raises(StartupError, match=r"no node of the Ray cluster has .*node_z"):
            server.bind("nowhere", ray_models.slow_where, *WHERE_IO, config=config)
        assert time.monotonic() - started < 5


def test_devices_on_a_cluster_without_gpus_fail_with_what_it_has(cluster: cluster_utils.Cluster) -> None:
    """With a Ray backend a model's devices are the cluster's GPUs, not this host's: bound before the server runs,
    devices='all' is taken (the cluster is not known yet) and `run` fails; bound live, it fails at once. This cluster
    has no GPU: never a silent CPU run, and the error names what its nodes have."""
    from pybind_serve import StartupError

    refused = r"asks for .*GPU.*, but the Ray cluster has 0 GPUs \(its 3 live nodes have \[\{.*'CPU': 1\.0"
    server = serve_on(RayBackend())
    server.bind("gpu", ray_models.gpu_where, *WHERE_IO, config=ModelConfig(devices="all"))
    with pytest.raises(StartupError, match=refused):
        server.run()
    with serve_on(RayBackend()) as server:
        server.run()
        for devices in ("all", 1, ["cuda:0", "cpu"]):
            with pytest.raises(StartupError, match=refused):
                server.bind("gpu", ray_models.gpu_where, *WHERE_IO, config=ModelConfig(devices=devices))
        assert server.is_ready()


def infer_where(url: str) -> str:
    client = httpclient.InferenceServerClient(url, network_timeout=30.0)
    try:
        x = httpclient.InferInput("x", [1, 1], "FP32")
        x.set_data_from_numpy(np.ones((1, 1), np.float32))
        return str(client.infer("gpu", [x]).as_numpy("where")[0, 0].decode())
    finally:
        client.close()


def test_devices_all_runs_instances_on_every_gpu_of_the_cluster(cluster: cluster_utils.Cluster) -> None:
    """A node that declares two GPUs to Ray joins the cluster (none is there: the model computes on the CPU), whose
    other nodes and this host have none. devices='all', instances=2: two instances on each GPU of the cluster, four
    actors of half a GPU each, all on that node; Ray sets each one's CUDA_VISIBLE_DEVICES (two on each GPU), and its
    worker_context().device is cuda:0. The model's config says so; devices=3 fails bind, naming the 2 GPUs."""
    import httpx

    from pybind_serve import StartupError

    gpu_node = cluster.add_node(**NODE, num_gpus=2, resources={"node_g": 1})
    backend = RayBackend()
    try:
        with serve_on(backend) as server:
            config = ModelConfig(max_batch_size=1, devices="all", instances=2, resources=Resources(num_cpus=0.25))
            server.bind("gpu", ray_models.gpu_where, *WHERE_IO, config=config)
            server.run()
            node_g = node_ids()["node_g"]
            where = backend.pool.where("gpu")
            assert [w["node_id"] for w in where] == [node_g] * 4
            url = server.http_url.removeprefix("http://")
            seen: dict[str, tuple[str, str, str]] = {}  # pid -> (node, CUDA_VISIBLE_DEVICES, device)
            with ThreadPoolExecutor(4) as pool:
                for _ in range(5):  # four at once reach the four instances (each takes one at a time)
                    for answer in pool.map(lambda _: infer_where(url), range(4)):
                        node, visible, device, pid = answer.split()
                        seen[pid] = (node, visible, device)
                    if len(seen) == 4:
                        break
            assert set(seen) == {str(w["pid"]) for w in where}
            assert {node for node, _, _ in seen.values()} == {node_g}
            assert sorted(visible for _, visible, _ in seen.values()) == ["0", "0", "1", "1"]
            assert {device for _, _, device in seen.values()} == {"cuda:0"}
            document = httpx.get(f"{server.http_url}/v2/models/gpu/config", timeout=10).json()
            assert document["instance_group"] == [{"name": "gpu_0", "kind": "KIND_GPU", "count": 2, "gpus": [0, 1]}]
            with pytest.raises(StartupError, match=r"devices=3 asks for 3 GPUs, but the Ray cluster has 2 GPUs"):
                server.bind("three", ray_models.gpu_where, *WHERE_IO, config=ModelConfig(devices=3))
    finally:
        cluster.remove_node(gpu_node)


class Load:
    """Clients sending requests one after the other on several connections until stopped; every answer counted."""

    def __init__(self, url: str, model: str, clients: int = 4) -> None:
        self.url, self.model = url, model
        self.ok, self.errors, self.unanswered = 0, [], 0
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(clients)
        self._lock = threading.Lock()
        self._futures = [self._pool.submit(self._run) for _ in range(clients)]

    def _run(self) -> None:
        client = httpclient.InferenceServerClient(self.url, network_timeout=30.0, connection_timeout=30.0)
        x = httpclient.InferInput("x", [1, 1], "FP32")
        x.set_data_from_numpy(np.ones((1, 1), np.float32))
        try:
            while not self._stop.is_set():
                try:
                    client.infer(self.model, [x])
                    outcome = None
                except Exception as exc:  # an answer that is an error (a timeout would say no answer came)
                    outcome = str(exc)
                with self._lock:
                    if outcome is None:
                        self.ok += 1
                    elif "timed out" in outcome.lower():
                        self.unanswered += 1
                    else:
                        self.errors.append(outcome)
        finally:
            client.close()

    def stop(self) -> None:
        self._stop.set()
        for future in self._futures:
            future.result(timeout=60)
        self._pool.shutdown()


def test_autoscaling_goes_up_under_a_burst_and_back_down_after(cluster: cluster_utils.Cluster) -> None:
    """A burst queues more than two requests per instance: a second instance starts and serves. Once the queue is
    empty with an instance idle, the newest one is drained (its batches in flight answered) and stopped, under a
    light load that loses nothing meanwhile."""
    backend = RayBackend(transport="tcp")
    with serve_on(backend) as server:
        scale = Autoscale(min_instances=1, max_instances=2, queue_per_instance=2, up_after_s=0.5, down_after_s=2.0)
        resources = Resources(num_cpus=0.25, custom={"pool": 1})
        server.bind(
            "m",
            ray_models.slow_where,
            *WHERE_IO,
            config=ModelConfig(max_batch_size=1, autoscale=scale, resources=resources),
        )
        server.run()
        url = server.http_url.removeprefix("http://")
        assert len(backend.pool.actors("m")) == 1
        burst = Load(url, "m", clients=8)
        try:
            assert wait_until(lambda: len(backend.pool.where("m", timeout_s=2)) == 2, 20), "it did not scale up"
            nodes = {w["node_id"] for w in backend.pool.where("m")}
            served = burst.ok
            assert wait_until(lambda: burst.ok > served + 40, 10)
        finally:
            burst.stop()
        assert nodes == {node_ids()["node_b"], node_ids()["node_c"]}  # one "pool" each
        light = Load(url, "m", clients=1)
        try:
            assert wait_until(lambda: len(backend.pool.actors("m")) == 1, 20), "it did not scale down"
            served = light.ok
            assert wait_until(lambda: light.ok > served + 10, 10)
        finally:
            light.stop()
        for load in (burst, light):
            assert load.errors == [] and load.unanswered == 0, load.errors


def test_autoscaling_on_queue_time_under_a_short_queue_of_slow_batches(cluster: cluster_utils.Cluster) -> None:
    """Three clients of a model whose batch takes 200 ms keep two requests queued: never more than the four per
    instance that the depth asks for, but the oldest of them has waited over 0.1 s (`queue_time_s`) at every look:
    a second instance starts and serves."""
    backend = RayBackend(transport="tcp")
    with serve_on(backend) as server:
        scale = Autoscale(max_instances=2, queue_per_instance=4, up_after_s=0.5, down_after_s=60.0, queue_time_s=0.1)
        config = ModelConfig(max_batch_size=1, autoscale=scale, resources=Resources(num_cpus=0.25))
        server.bind("m", ray_models.slower_where, *WHERE_IO, config=config)
        server.run()
        assert len(backend.pool.actors("m")) == 1
        load = Load(server.http_url.removeprefix("http://"), "m", clients=3)
        try:
            assert wait_until(lambda: len(backend.pool.where("m", timeout_s=2)) == 2, 20), "it did not scale up"
            served = load.ok
            assert wait_until(lambda: load.ok > served + 20, 10)
        finally:
            load.stop()
        assert load.errors == [] and load.unanswered == 0, load.errors


def test_a_worker_actor_killed_mid_load(cluster: cluster_utils.Cluster) -> None:
    """One of two instances killed under load: every request is answered (its batch in flight with an error saying
    the worker died, the rest served by the other instance), the model stays ready, and a new actor takes its
    place and serves."""
    backend = RayBackend(transport="tcp")
    with serve_on(backend) as server:
        config = ModelConfig(max_batch_size=4, instances=2, resources=Resources(num_cpus=0.25, custom={"pool": 1}))
        server.bind("m", ray_models.slow_where, *WHERE_IO, config=config)
        server.run()
        before = {w["pid"] for w in backend.pool.where("m")}
        load = Load(server.http_url.removeprefix("http://"), "m")
        try:
            wait_until(lambda: load.ok >= 20, 20)
            ray.kill(backend.pool.actors("m")[0], no_restart=True)
            served = load.ok
            assert wait_until(lambda: load.ok >= served + 40, 20), "the other instance did not keep serving"
            assert server.is_ready()
            assert wait_until(lambda: len(backend.pool.actors("m")) == 2, 30), "no new actor replaced the one killed"
            assert wait_until(lambda: server.is_ready() and len(backend.pool.where("m")) == 2, 30)
        finally:
            load.stop()
        after = {w["pid"] for w in backend.pool.where("m")}
        assert len(after - before) == 1
        assert load.unanswered == 0
        assert all("worker" in e and "batch was lost" in e for e in load.errors), load.errors
        client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
        try:  # both instances serve again: many requests at once reach both
            x = httpclient.InferInput("x", [1, 1], "FP32")
            x.set_data_from_numpy(np.ones((1, 1), np.float32))
            assert all(client.infer("m", [x]).as_numpy("y")[0, 0] == 2.0 for _ in range(10))
        finally:
            client.close()


def test_a_node_removed_mid_load(cluster: cluster_utils.Cluster) -> None:
    """Two instances on two nodes of their own; one node is removed under load (its raylet and actors killed):
    every accepted request succeeds (the batch lost with the node runs again on the other instance), the model stays
    ready, and the lost instance is recreated on a third node that has the resource."""
    doomed = cluster.add_node(**NODE, resources={"spare": 1, "node_d": 1})
    survivor = cluster.add_node(**NODE, resources={"spare": 1, "node_e": 1})
    spare = None
    backend = RayBackend(transport="tcp")
    try:
        with serve_on(backend) as server:
            config = ModelConfig(max_batch_size=4, instances=2, resources=Resources(num_cpus=0.25, custom={"spare": 1}))
            server.bind("m", ray_models.slow_where, *WHERE_IO, config=config)
            server.run()
            ids = node_ids()
            assert sorted(w["node_id"] for w in backend.pool.where("m")) == sorted([ids["node_d"], ids["node_e"]])
            spare = cluster.add_node(**NODE, resources={"spare": 1, "node_f": 1})
            load = Load(server.http_url.removeprefix("http://"), "m")
            try:
                wait_until(lambda: load.ok >= 20, 20)
                cluster.remove_node(doomed, allow_graceful=False)
                doomed = None
                served = load.ok
                assert wait_until(lambda: load.ok >= served + 40, 20), "the other instance did not keep serving"
                assert server.is_ready()

                def replaced() -> bool:
                    where = backend.pool.where("m")
                    return sorted(w["node_id"] for w in where) == sorted([ids["node_e"], node_ids()["node_f"]])

                assert wait_until(replaced, 30), backend.pool.where("m")
            finally:
                load.stop()
            # The batch in flight on the lost node ran again on the other instance: every request succeeded.
            assert load.unanswered == 0 and load.errors == [], load.errors
    finally:
        for node in (doomed, survivor, spare):
            if node is not None:
                cluster.remove_node(node)
