"""Front replicas on the other nodes of a Ray cluster (`RayBackend(node_fronts=...)`), on a real cluster of three
nodes on loopback: each replica answers tritonclient over HTTP and gRPC with the models' instances wherever they
run; by default a node that shares the owner's host gets none; a replica whose front process dies, or whose actor
is killed, serves again on the same ports; one lost with its node leaves the others serving.

Every node shares this host here, so the replicas are named one by one (``node_fronts=[ids]``), with ports of their
own (``node_ports``: 0, any free one). Skipped where Ray is not installed.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from pybind_serve import ModelConfig, RayBackend, Resources

from ..conftest import wait_until
from . import ray_models, test_ray
from .test_ray import LOOPBACK, NODE, WHERE_IO, cluster_utils, grpcclient, httpclient, node_ids, ray, serve_on

cluster = test_ray.cluster  # the fixtures: a cluster of this module's own, and the leak check
no_leaks = test_ray.no_leaks

ANY_PORT = {"http": 0, "grpc": 0, "metrics": 0}
POOL = ModelConfig(instances=2, max_batch_size=4, resources=Resources(num_cpus=0.25, custom={"pool": 1}))  # b and c


def infer_where(url: str, protocol: str = "http") -> tuple[str, float]:
    """One request to ``slow_where`` at a front: the node that ran it, and y."""
    x = np.ones((1, 1), np.float32)
    if protocol == "http":
        client: Any = httpclient.InferenceServerClient(url, network_timeout=30)
        inputs = [httpclient.InferInput("x", [1, 1], "FP32")]
    else:
        client = grpcclient.InferenceServerClient(url)
        inputs = [grpcclient.InferInput("x", [1, 1], "FP32")]
    try:
        inputs[0].set_data_from_numpy(x)
        result = client.infer("where", inputs)
        return result.as_numpy("where")[0, 0].decode(), float(result.as_numpy("y")[0, 0])
    finally:
        client.close()


def test_replicas_on_named_nodes_serve_every_instance(cluster: cluster_utils.Cluster) -> None:
    """A replica on node_b and one on node_c, each on ports of its own: tritonclient over HTTP and gRPC gets answers
    at each, from instances on both pool nodes; the owner's front still answers; each replica has metrics."""
    ids = node_ids()
    backend = RayBackend(node_fronts=[ids["node_b"], ids["node_c"]], node_ports=ANY_PORT)
    with serve_on(backend) as server:
        server.bind("where", ray_models.slow_where, *WHERE_IO, config=POOL)
        server.run()
        replicas = backend.replicas
        assert sorted(r["node_id"] for r in replicas) == sorted([ids["node_b"], ids["node_c"]])
        ports = {server.http_port} | {r["http_port"] for r in replicas}
        assert len(ports) == 3 and all(isinstance(r["grpc_port"], int) for r in replicas)
        for replica in replicas:
            url = f"{LOOPBACK}:{replica['http_port']}"
            with ThreadPoolExecutor(6) as pool:  # at once: one instance busy, the next batch goes to the other
                answers = list(pool.map(infer_where, [url] * 24))
            assert {y for _, y in answers} == {2.0}
            seen = {node for node, _ in answers}
            assert seen == {ids["node_b"], ids["node_c"]}, "a replica's batches go to every instance"
            assert infer_where(f"{LOOPBACK}:{replica['grpc_port']}", "grpc")[1] == 2.0
            import httpx

            metrics = httpx.get(f"http://{LOOPBACK}:{replica['metrics_port']}/metrics", timeout=10).text
            assert 'nv_inference_request_success{model="where",version="1"}' in metrics
        assert infer_where(server.http_url.removeprefix("http://"))[1] == 2.0


def test_no_replica_on_a_node_that_shares_this_host(cluster: cluster_utils.Cluster) -> None:
    """The default (a replica per node, one per host): every node of this cluster shares this host, whose fronts
    serve it already, so none is started; node_fronts=False starts none either."""
    for backend in (RayBackend(), RayBackend(node_fronts=False)):
        with serve_on(backend) as server:
            server.bind("where", ray_models.slow_where, *WHERE_IO, config=POOL)
            server.run()
            assert backend.replicas == []
            assert infer_where(server.http_url.removeprefix("http://"))[1] == 2.0


def test_a_replica_serves_again_after_its_front_or_its_actor_dies(cluster: cluster_utils.Cluster) -> None:
    """The replica's front process killed: its actor starts it again on the same ports, and the owner loads the
    models into it. Its actor killed: the owner starts a new one on the same node and ports."""
    ids = node_ids()
    backend = RayBackend(node_fronts=[ids["node_b"]], node_ports=ANY_PORT)
    with serve_on(backend) as server:
        server.bind("where", ray_models.slow_where, *WHERE_IO, config=POOL)
        server.run()
        (replica,) = backend.replicas
        url = f"{LOOPBACK}:{replica['http_port']}"
        assert infer_where(url)[1] == 2.0

        def serves() -> bool:
            try:
                return infer_where(url)[1] == 2.0
            except Exception:
                return False

        member = backend._replicas.members[0]  # type: ignore[union-attr]
        first_pid, first_actor = member.pid, member.handle
        os.kill(first_pid, signal.SIGKILL)
        assert wait_until(lambda: member.restarts_seen == 1, 30), "the actor did not restart its front process"
        assert wait_until(serves, 30), "the replica did not serve again after its front process died"
        ray.kill(first_actor, no_restart=True)
        assert wait_until(lambda: member.handle is not first_actor, 60), "no new actor for the replica"
        assert wait_until(serves, 60), "the replica did not serve again after its actor died"
        assert member.pid != first_pid and not member.lost
        assert backend.replicas[0]["http_port"] == replica["http_port"]


def test_a_replica_lost_with_its_node_leaves_the_others_serving(cluster: cluster_utils.Cluster) -> None:
    """A fourth node with a replica, removed mid-load: every request sent to the owner's front and to node_b's
    replica is answered with success; the lost replica leaves the list; a model bound afterwards loads."""
    extra = cluster.add_node(**NODE, resources={"node_d": 1})
    cluster.wait_for_nodes()
    ids = node_ids()
    backend = RayBackend(node_fronts=[ids["node_b"], ids["node_d"]], node_ports=ANY_PORT)
    with serve_on(backend) as server:
        server.bind("where", ray_models.slow_where, *WHERE_IO, config=POOL)
        server.run()
        urls = [server.http_url.removeprefix("http://")]
        urls += [f"{LOOPBACK}:{r['http_port']}" for r in backend.replicas if r["node_id"] == ids["node_b"]]
        stop, results, errors = threading.Event(), [], []

        def load(url: str) -> None:
            while not stop.is_set():
                try:
                    results.append(infer_where(url)[1])
                except Exception as exc:  # counted: the test fails on any
                    errors.append(repr(exc))

        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(load, url) for url in urls * 2]
            time.sleep(1.0)
            cluster.remove_node(extra)
            assert wait_until(lambda: len(backend.replicas) == 1, 30), backend.replicas
            time.sleep(1.0)
            stop.set()
            for future in futures:
                future.result(timeout=60)
        assert not errors, errors[:3]
        assert len(results) > 20 and set(results) == {2.0}
        server.bind("where2", ray_models.slow_where, *WHERE_IO, config=ModelConfig(resources=Resources(num_cpus=0.25)))
        assert server.is_ready()
