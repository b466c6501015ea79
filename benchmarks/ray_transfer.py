"""A tensor's round trip to a model on another Ray node, over ZeroMQ (the network transport) or Ray's object store.

On a `ray.cluster_utils.Cluster` on loopback (a head node, where this driver runs, and one other node), a float32
array of each size goes from the driver to an actor on the other node and a same-sized answer comes back (a batch
and its result), by:

1. ZeroMQ over TCP in the clear: a ROUTER here, a DEALER in the actor, the array as a message part sent without a
   copy; the frames are the network transport's own (`transport.network.to_parts` / `parse_parts`,
   `transport.inline.pack_group` / `unpack_group`), and the actor copies its input into writable memory before
   answering, as a worker does.
2. The same with CurveZMQ (`new_keys`, `secure_server`, `secure_client`): encrypted and authenticated, the
   default off-host.
3. The same as 1, but the actor copies its input into a buffer kept per size instead of fresh memory (not what a
   worker does: it shows what the fresh memory costs).
4. Ray's object store: ``ray.put`` the array, pass the reference to an actor method (Ray resolves it, pulling the
   object into the other node's store, and the method reads it from there without a copy), which returns the
   array (stored on its node); ``ray.get`` here pulls the answer back.
5. The same with the actor on the driver's node: both ends share one object store, nothing is transferred
   (the shared-memory path, for reference). Both nodes' stores are touched once before measuring, as a store in
   use has been.

Then, end to end through the server: `Serve(backend=RayBackend(transport="tcp", encrypt=...))` with an identity
model on the other node, one request at a time through `ModelClient` over HTTP, beside the same server without a
backend (a forked worker on shared memory, so its figure is mostly the HTTP request and response themselves).

    python benchmarks/ray_transfer.py [--sizes 1,16,64,256] [--serve-sizes 16,64] [--quick] [--out DIR]

Each figure is the median of several round trips (after two to warm up), checked on every call. Everything on
loopback shares this host's cores and memory bandwidth: the report says how many cores there were. Results go to
``<--out>/<--name>.json`` and ``.md`` (default ``benchmarks/results/local``, which git ignores).
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray's nodes on loopback only

import numpy as np
import zmq

from pybind_serve import ModelConfig, RayBackend, Resources, Serve, Tensor, batch
from pybind_serve.client import ModelClient
from pybind_serve.transport.inline import pack_group, unpack_group
from pybind_serve.transport.network import NetworkKeys, new_keys, parse_parts, secure_client, secure_server, to_parts

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks.harness, when run as a script

from benchmarks.harness.host import add_output_options, describe_host, write_results  # noqa: E402

LOOPBACK = "127.0.0.1"
MIB = 1 << 20
TIMEOUT_MS = 120_000  # a lost peer ends a run instead of hanging it
WARM_UP = 2  # round trips before those timed


def malloc_env() -> dict[str, str]:
    """glibc's allocator settings from the environment (``MALLOC_MMAP_THRESHOLD_``...): they decide whether a
    large receive buffer is fresh memory (page faults on every message) or reused heap."""
    return {name: value for name, value in os.environ.items() if name.startswith("MALLOC_")}


@batch
def identity(x):  # type: ignore[no-untyped-def]
    return {"y": x}


def zmq_echo(endpoint: str, curve: tuple[str, NetworkKeys] | None, reuse: bool = False) -> int:
    """A worker's side of the network transport, reduced to its data path: connect a DEALER, say hello, answer
    each ``batch`` frame's input with itself until a ``stop`` frame; the number of batches answered.

    The input is copied once into writable memory, as a worker reads its inputs: fresh memory as the worker does
    (`unpack_group` with ``writable``), or (``reuse``) one buffer kept per size, whose pages are faulted in once.
    """
    context = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
    if curve is not None:
        secure_client(sock, *curve)
    sock.connect(endpoint)
    sock.send_multipart(to_parts({"op": "hello"}))
    answered = 0
    kept: dict[tuple[int, ...], np.ndarray] = {}
    try:
        while True:
            frame = parse_parts(sock.recv_multipart(copy=False))
            if frame["op"] == "stop":
                return answered
            (x,) = unpack_group(frame["inputs"]["x"], frame["buffers"], writable=not reuse)
            if reuse:  # safe here: the previous answer, sent from this buffer, has been received in full
                if x.shape not in kept:
                    kept[x.shape] = np.empty_like(x)
                np.copyto(kept[x.shape], x)
                x = kept[x.shape]
            buffers: list[Any] = []
            answer = {"op": "result", "id": frame["id"], "outputs": {"y": pack_group([x], buffers)}}
            sock.send_multipart(to_parts({**answer, "buffers": buffers}), copy=False)
            answered += 1
    finally:
        sock.close(linger=0)
        context.term()


def object_store_echo(x: np.ndarray) -> np.ndarray:
    """The object-store path's model: Ray hands it the array read from its node's store (no copy); what it
    returns is stored on its node (one copy), for the caller to pull."""
    return x


class Peer:
    """The actor at the other end (a Ray actor class once `ray.remote` wraps it)."""

    def node(self) -> str:
        import ray

        return str(ray.get_runtime_context().get_node_id())

    def malloc_env(self) -> dict[str, str]:
        return malloc_env()

    def zmq_echo(self, endpoint: str, curve: tuple[str, NetworkKeys] | None, reuse: bool) -> int:
        return zmq_echo(endpoint, curve, reuse)

    def echo(self, x: np.ndarray) -> np.ndarray:
        return object_store_echo(x)

    def fill_store(self, nbytes: int) -> int:
        return fill_store(nbytes)


class ZmqPath:
    """A ROUTER here and its peer's `zmq_echo` running in an actor; `round_trip` sends a batch frame and waits for
    its answer, as a front does."""

    def __init__(self, actor: Any, encrypt: bool, reuse: bool = False) -> None:
        self.context = zmq.Context()
        self.sock = self.context.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVTIMEO, TIMEOUT_MS)
        curve = None
        if encrypt:
            server = new_keys()
            secure_server(self.sock, server.secret)
            curve = (server.public, new_keys())
        port = self.sock.bind_to_random_port(f"tcp://{LOOPBACK}")
        self.serving = actor.zmq_echo.remote(f"tcp://{LOOPBACK}:{port}", curve, reuse)
        parts = self.sock.recv_multipart(copy=False)
        self.peer = parts[0].bytes
        assert parse_parts(parts[1:])["op"] == "hello"
        self.sent = 0

    def round_trip(self, x: np.ndarray) -> np.ndarray:
        self.sent += 1
        buffers: list[Any] = []
        frame = {"op": "batch", "id": self.sent, "inputs": {"x": pack_group([x], buffers)}, "buffers": buffers}
        self.sock.send_multipart([self.peer, *to_parts(frame)], copy=False)
        answer = parse_parts(self.sock.recv_multipart(copy=False)[1:])
        assert answer["id"] == self.sent
        return unpack_group(answer["outputs"]["y"], answer["buffers"])[0]

    def close(self) -> None:
        import ray

        self.sock.send_multipart([self.peer, *to_parts({"op": "stop"})])
        answered = ray.get(self.serving, timeout=TIMEOUT_MS / 1000)
        assert answered == self.sent, (answered, self.sent)
        self.sock.close(linger=0)
        self.context.term()


class ObjectStorePath:
    """``ray.put`` here, the reference to the actor's `echo`, ``ray.get`` of its answer here."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor
        self.locations: dict[str, Any] = {}

    def round_trip(self, x: np.ndarray) -> np.ndarray:
        import ray

        ref = ray.put(x)
        answer_ref = self.actor.echo.remote(ref)
        y: np.ndarray = ray.get(answer_ref)
        if not self.locations:  # once: which nodes' stores held each object (the proof of a transfer, or none)
            self.locations = where_stored(ref, answer_ref)
        return y

    def close(self) -> None:
        pass


def where_stored(*refs: Any) -> dict[str, Any]:
    """The nodes whose object stores hold each reference's object (Ray's experimental API; {} without it)."""
    try:
        from ray.experimental import get_object_locations

        found = get_object_locations(list(refs))
    except Exception:  # an experimental API: its absence costs only this detail
        return {}
    names = ("input", "answer")
    return {name: sorted(found[ref].get("node_ids", [])) for name, ref in zip(names, refs, strict=False)}


def repetitions(mib: float, quick: bool) -> int:
    """More round trips for small sizes, at least 5; 2 in a quick run."""
    return 2 if quick else max(5, min(20, int(512 // mib)))


def fill_store(nbytes: int) -> int:
    """Touch this node's object store once, as a store in use has been: objects of 64 MiB at most, all held at
    once, then dropped. (A store's pages are faulted in the first time an object lands on them, and stay:
    without this, whichever path first reaches fresh pages would pay for them.) The bytes put."""
    import ray

    chunk = min(64 * MIB, nbytes)
    refs = [ray.put(np.ones(chunk, dtype=np.uint8)) for _ in range(nbytes // chunk)]
    return len(refs) * chunk


def measure(call: Callable[[np.ndarray], np.ndarray], x: np.ndarray, reps: int) -> list[float]:
    """Seconds of each of ``reps`` round trips after two to warm up (connections, the object stores' memory);
    every answer is checked, the first in full."""
    for _ in range(WARM_UP):
        y = call(x)
        assert y.shape == x.shape and np.array_equal(y, x), "a wrong answer"
        del y
    seconds = []
    for _ in range(reps):
        start = time.perf_counter()
        y = call(x)
        seconds.append(time.perf_counter() - start)
        assert y.shape == x.shape and y[0] == x[0] and y[-1] == x[-1] and y[len(y) // 2] == x[len(x) // 2]
        del y
    return seconds


def row(path: str, mib: float, seconds: list[float]) -> dict[str, Any]:
    median = statistics.median(seconds)
    return {
        "path": path,
        "mib": mib,
        "round_trip_ms": round(median * 1e3, 2),
        "mb_per_s": round(mib * MIB / median / 1e6),  # the tensor's size over the round trip (it goes each way)
        "runs_ms": [round(s * 1e3, 2) for s in seconds],
    }


def array(mib: float) -> np.ndarray:
    return np.random.default_rng(int(mib * 1000)).random(int(mib * MIB) // 4, dtype=np.float32)


def transfers(
    sizes: list[float], quick: bool, driver_node: str, far_node: str, store_bytes: int
) -> tuple[list[dict[str, Any]], Any]:
    """Rows of the five raw paths, each size in turn through every path (so they share the same minutes), once
    both nodes' object stores are warm."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    def actor_on(node: str) -> Any:
        strategy = NodeAffinitySchedulingStrategy(node, soft=False)
        return ray.remote(Peer).options(num_cpus=0, scheduling_strategy=strategy).remote()

    actors = {name: actor_on(far_node) for name in ("zmq", "curve", "reuse", "far")}
    actors["near"] = actor_on(driver_node)
    nodes = ray.get([actor.node.remote() for actor in actors.values()], timeout=120)
    assert nodes == [far_node] * 4 + [driver_node], nodes
    assert ray.get(actors["zmq"].malloc_env.remote(), timeout=120) == malloc_env(), "the actors' allocator differs"
    warm = int(store_bytes * 0.85)
    assert fill_store(warm) > 0 and ray.get(actors["far"].fill_store.remote(warm), timeout=300) > 0
    paths: dict[str, Any] = {
        "ZeroMQ TCP, plain": ZmqPath(actors["zmq"], encrypt=False),
        "ZeroMQ TCP, CurveZMQ": ZmqPath(actors["curve"], encrypt=True),
        "ZeroMQ TCP, plain, input copied into a kept buffer": ZmqPath(actors["reuse"], encrypt=False, reuse=True),
        "Ray object store, other node": ObjectStorePath(actors["far"]),
        "Ray object store, same node (no transfer)": ObjectStorePath(actors["near"]),
    }
    rows = []
    try:
        for mib in sizes:
            x = array(mib)
            for name, path in paths.items():
                rows.append(row(name, mib, measure(path.round_trip, x, repetitions(mib, quick))))
                print(f"{name}, {mib:g} MiB: {rows[-1]['round_trip_ms']} ms, {rows[-1]['mb_per_s']} MB/s", flush=True)
    finally:
        for path in paths.values():
            path.close()
        for actor in actors.values():
            ray.kill(actor)
    locations = {name: path.locations for name, path in paths.items() if isinstance(path, ObjectStorePath)}
    return rows, locations


def served(sizes: list[float], quick: bool, far_resource: str) -> list[dict[str, Any]]:
    """Rows of one HTTP request at a time through `Serve`, on each path from the front to the model."""
    io = ([Tensor("x", np.float32, (-1,))], [Tensor("y", np.float32, (-1,))])
    far = Resources(num_cpus=1, custom={far_resource: 1})
    setups: dict[str, tuple[RayBackend | None, ModelConfig]] = {
        "Serve, no backend (forked worker, shared memory)": (None, ModelConfig(max_batch_size=1)),
        "Serve, RayBackend tcp, plain": (
            RayBackend(transport="tcp", encrypt=False),
            ModelConfig(max_batch_size=1, resources=far),
        ),
        "Serve, RayBackend tcp, CurveZMQ": (
            RayBackend(transport="tcp", encrypt=True),
            ModelConfig(max_batch_size=1, resources=far),
        ),
    }
    rows = []
    for name, (backend, config) in setups.items():
        with Serve(http_port=0, grpc_port=0, metrics_port=None, host=LOOPBACK, backend=backend) as server:
            server.bind("identity", identity, *io, config=config)
            server.run()
            if backend is not None:
                (where,) = backend.pool.where("identity")
                assert where["transport"] == "tcp", where
            with ModelClient(server.http_url or "", "identity", timeout_s=120) as client:
                for mib in sizes:
                    x = array(mib)

                    def call(x: np.ndarray, client: ModelClient = client) -> np.ndarray:
                        y: np.ndarray = client.infer_sample(x=x)["y"]
                        return y

                    rows.append(row(name, mib, measure(call, x, repetitions(mib, quick))))
                    print(f"{name}, {mib:g} MiB: {rows[-1]['round_trip_ms']} ms", flush=True)
    return rows


def machine() -> dict[str, Any]:
    import ray

    return describe_host(ray=ray.__version__, pyzmq=zmq.__version__, libzmq=zmq.zmq_version())


def markdown(document: dict[str, Any]) -> str:
    sizes = sorted({r["mib"] for r in document["rows"]})
    paths = list(dict.fromkeys(r["path"] for r in document["rows"]))
    by = {(r["path"], r["mib"]): r for r in document["rows"]}
    head = "| path | " + " | ".join(f"{s:g} MiB: ms, MB/s" for s in sizes) + " |"
    lines = [head, "| --- |" + " ---: |" * len(sizes)]
    for path in paths:
        cells = [f"{by[path, s]['round_trip_ms']}, {by[path, s]['mb_per_s']}" if (path, s) in by else "" for s in sizes]
        lines.append(f"| {path} | " + " | ".join(cells) + " |")
    m = document["machine"]
    env = " ".join(f"{k}={v}" for k, v in document["malloc_env"].items())
    return (
        f"Round trip of a float32 tensor (there and a same-sized answer back), median ms, and MB/s = size / round "
        f"trip. {document['date']}, `{env + ' ' if env else ''}{document['command']}`, {m['cores']} cores "
        f"({m['cpu']}), {m['memory_gib']} GiB, "
        f"Ray {m['ray']}, pyzmq {m['pyzmq']} (libzmq {m['libzmq']}).\n\n" + "\n".join(lines) + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,16,64,256", help="MiB, comma-separated (the raw transfers)")
    parser.add_argument("--serve-sizes", default="16,64", help="MiB, comma-separated (through Serve; '' for none)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 MiB, two round trips per figure")
    add_output_options(parser, "ray_transfer")
    args = parser.parse_args()
    sizes = [1.0] if args.quick else [float(s) for s in args.sizes.split(",") if s]
    serve_sizes = [1.0] if args.quick else [float(s) for s in args.serve_sizes.split(",") if s]
    biggest = max([*sizes, *serve_sizes])
    # Each node's store holds the input and the answer (and their copies while they are read): room for four.
    store_bytes = int(max(256 * MIB, 4 * biggest * MIB + 128 * MIB))

    import ray
    from ray.cluster_utils import Cluster

    node: dict[str, Any] = {"node_ip_address": LOOPBACK, "include_dashboard": False, "object_store_memory": store_bytes}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "num_cpus": 1, "resources": {"node_head": 1}})
    try:
        cluster.add_node(**node, num_cpus=1, resources={"node_other": 1})
        ray.init(address=cluster.address, _node_ip_address=LOOPBACK, log_to_driver=False)
        driver_node = ray.get_runtime_context().get_node_id()
        alive = [n for n in ray.nodes() if n["Alive"]]
        (far,) = [n for n in alive if n["NodeID"] != driver_node]
        far_resource = next(r for r in far["Resources"] if r.startswith("node_"))
        rows, locations = transfers(sizes, args.quick, driver_node, far["NodeID"], store_bytes)
        if serve_sizes:
            rows += served(serve_sizes, args.quick, far_resource)
    finally:
        ray.shutdown()
        cluster.shutdown()
    document = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/ray_transfer.py", *sys.argv[1:]]),
        "machine": machine(),
        "malloc_env": malloc_env(),  # the driver's, which the nodes and their actors inherit
        "object_store_bytes_per_node": store_bytes,
        "driver_node": driver_node,
        "other_node": far["NodeID"],
        "object_locations": locations,
        "rows": rows,
    }
    write_results(args.out, args.name, document, markdown(document))


if __name__ == "__main__":
    main()
