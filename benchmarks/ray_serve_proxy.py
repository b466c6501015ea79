"""Ray Serve's HTTP proxy beside pybind_serve's front, on one Ray cluster, under one load generator.

Issue 19 left open whether front replicas should sit behind Ray Serve's proxy rather than one per node. This
measures, in one run, side by side, on a `ray.cluster_utils.Cluster` on loopback (a head node with no CPUs, where
this driver, Ray Serve's controller and proxy, and our owner's front run; one worker node, where the models run):

1. **Ray Serve's proxy, the cheapest deployment**: ``serve.start`` (its proxy on the head node only, on a free
   port), and an ``@serve.deployment`` whose ``async __call__`` reads a JSON body of 16 floats and returns it
   (no model, no KServe, no batching), ``max_ongoing_requests`` above the highest concurrency so Ray Serve's
   default of 5 does not queue requests at the proxy. This is a ceiling for any front behind Ray Serve's proxy:
   the KServe v2 parsing and validation, the batching and the hop to our workers would all come on top.
   Then the same again, last, on a fresh cluster with Ray Serve's own throughput settings
   (``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``: user code and the router on the actors' main event loops, request logs
   buffered, not on stderr), its direct ingress kept off (``RAY_SERVE_ENABLE_DIRECT_INGRESS=0``: on, the replica
   answers HTTP itself and there is no proxy); ``--no-tuned`` skips it.
2. **pybind_serve on the same cluster**: ``Serve(backend=RayBackend(node_fronts=False))``, an identity model
   (16 FP32, ``max_batch_size=8``) as one Ray actor on the worker node, a KServe v2 JSON request of the same 16
   floats to the owner's front; on the path this host uses (``transport="auto"``: the actor shares this host's
   shared memory) and on the one other hosts use (``transport="tcp"``, CurveZMQ).
3. **pybind_serve without Ray**, for reference: ``Serve()`` and a forked worker (shared memory).

Every row is loaded by the same generator: the repository's asyncio closed loop (`harness/httpload.py`, the
suite's: N keep-alive HTTP/1.1 connections, each sending its next request once the last is answered, run in a
process of its own; only requests answered inside the measured span count), at each ``--concurrency``. Each
answer's content is checked once before the load. For each row the CPU time of the server's processes over the
measured span (every process under this driver but the generator: Ray's daemons and workers, Ray Serve's proxy
and replica, our fronts and actors) is divided by the requests answered: the CPU one request costs, which is
what a front's throughput comes down to on a host whose cores it shares. With ``--perf-analyzer`` pybind_serve's
rows are also loaded by perf_analyzer over HTTP (it does not speak plain JSON, so it cannot load Ray Serve's).

**Needs ``ray[serve]`` installed beside pybind_serve** (Ray Serve's extras: pydantic, fastapi, ... are not
dependencies of pybind_serve): install them outside the project's virtualenv, for instance only those it lacks,
``pip install --no-deps --target /tmp/rayserve-extra ...``, keeping the same ``ray``, ``protobuf``, ``starlette``
and ``uvicorn`` as pybind_serve's, then run with ``PYTHONPATH=/tmp/rayserve-extra`` (benchmarks/README.md says
how). Without ``ray.serve`` it exits at once, saying so.

    PYTHONPATH=/tmp/rayserve-extra python benchmarks/ray_serve_proxy.py [--seconds 5] [--concurrency 1,16]
        [--perf-analyzer [PATH]] [--no-tuned] [--name ray_serve_proxy] [--out benchmarks/results/local]

Everything shares this host's cores (the report says how many). Results go to ``<--out>/<--name>.json`` and
``.md`` (default ``benchmarks/results/local``, which git ignores). Ray, Ray Serve and every server are stopped at
the end, also on an error.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # Ray's nodes on loopback only

import httpx
import numpy as np

from pybind_serve import ModelConfig, RayBackend, Serve, Tensor, batch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmarks.harness, when run as a script

from benchmarks.harness.host import add_output_options, describe_host, write_results  # noqa: E402
from benchmarks.harness.perf_analyzer import parse as parse_perf_analyzer  # noqa: E402
from benchmarks.harness.procfs import descendants, stat_fields  # noqa: E402

LOOPBACK = "127.0.0.1"
ELEMENTS = 16  # 64 B of FP32
VALUES = [float(i) + 0.5 for i in range(ELEMENTS)]
IDENTITY_MAX_BATCH = 8  # as the suite's identity
UTIME, STIME = 11, 12  # fields of /proc/PID/stat after the command name
TICKS = os.sysconf("SC_CLK_TCK")
SERVE_ROUTE = "/echo"
# Ray Serve's own throughput settings (ray/serve/_private/constants.py), its direct ingress kept off: that would
# take the proxy away (the replica answering HTTP itself), and the question is what a front behind the proxy gets.
TUNED_ENV = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0"}
INSTALL_HINT = (
    "ray.serve cannot be imported: this benchmark needs ray[serve] installed beside pybind_serve (its extras are not "
    "dependencies of pybind_serve). Install them outside the virtualenv, e.g. "
    "`pip install --no-deps --target /tmp/rayserve-extra <the extras pip install --dry-run 'ray[serve]' lists>`, "
    "then run with PYTHONPATH=/tmp/rayserve-extra (see benchmarks/README.md)."
)


@batch
def identity(x):  # type: ignore[no-untyped-def]
    return {"y": x}


class Echo:
    """Ray Serve's cheapest deployment (a class once ``serve.deployment`` wraps it): the JSON body back."""

    async def __call__(self, request: Any) -> Any:
        return await request.json()


def kserve_body() -> dict[str, Any]:
    return {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, ELEMENTS], "data": VALUES}]}


def plain_body() -> dict[str, Any]:
    return {"data": VALUES}


def check_answer(url: str, body: dict[str, Any], expect: Callable[[Any], bool]) -> None:
    """One request before the load: the answer must be 200 and hold the 16 floats sent."""
    answer = httpx.post(url, json=body, timeout=60)
    if answer.status_code != 200 or not expect(answer.json()):
        raise RuntimeError(f"{url} answered {answer.status_code}: {answer.text[:300]}")


def cpu_seconds(pids: set[int]) -> dict[int, float]:
    found = {}
    for pid in pids:
        fields = stat_fields(pid)
        if fields:
            found[pid] = (int(fields[UTIME]) + int(fields[STIME])) / TICKS
    return found


def process_name(pid: int) -> str:
    """A short name for a CPU breakdown: Ray's process titles (``ray::ProxyActor``...) or the command."""
    if pid == os.getpid():
        return "this driver (the owner of pybind_serve's server)"
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    first = argv[0].decode(errors="replace")
    if first.startswith("ray::"):
        return first.split()[0]
    words = [Path(argv[0].decode(errors="replace")).name] + [a.decode(errors="replace") for a in argv[1:3] if a]
    return " ".join(words)[:60]


def server_cpu(before: dict[int, float], after: dict[int, float]) -> tuple[float, dict[str, float]]:
    """CPU seconds spent between two samples by processes alive at both (or born in between), and by name."""
    by_name: dict[str, float] = {}
    for pid, seconds in after.items():
        spent = seconds - before.get(pid, 0.0)
        if spent > 0:
            name = process_name(pid)
            by_name[name] = by_name.get(name, 0.0) + spent
    return sum(by_name.values()), dict(sorted(by_name.items(), key=lambda item: -item[1]))


def asyncio_loop(url: str, path: str, body: dict[str, Any], concurrency: int, seconds: float) -> dict[str, Any]:
    """The suite's generator (`benchmarks.harness.httpload`) in a process of its own, and the server's CPU over
    its measured span (every process under this driver, the generator's excepted)."""
    warmup = max(1.0, seconds / 3)
    argv = [sys.executable, "-m", "benchmarks.harness.httpload", url, path, json.dumps(body)]
    argv += ["--concurrency", str(concurrency), "--seconds", str(seconds), "--warmup", str(warmup)]
    generator = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(warmup)
        mine = descendants(os.getpid()) - descendants(generator.pid)
        before = cpu_seconds(mine)
        time.sleep(seconds)
        after = cpu_seconds(descendants(os.getpid()) - descendants(generator.pid))
        out, err = generator.communicate(timeout=60 + 3 * seconds)
    finally:
        if generator.poll() is None:
            generator.kill()
            generator.wait()
    if generator.returncode != 0:
        raise RuntimeError(f"the asyncio loop exited {generator.returncode}:\n{out}{err}")
    figures: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    if figures["errors"]:
        raise RuntimeError(f"{figures['errors']:.0f} requests failed under the asyncio loop")
    cpu, by_name = server_cpu(before, after)
    figures["server_cpu_cores"] = cpu / seconds
    figures["server_cpu_ms_per_request"] = cpu * 1000 / (figures["req_s"] * seconds)
    figures["cpu_by_process_s"] = {name: round(s, 3) for name, s in by_name.items()}
    return figures


def perf_analyzer(binary: str, http: str, concurrency: int, seconds: float) -> dict[str, Any]:
    """perf_analyzer over HTTP: three windows of a third of ``seconds`` each, their average."""
    argv = [binary, "-m", "identity", "-i", "http", "-u", http, "--shape", f"x:{ELEMENTS}"]
    argv += ["--concurrency-range", str(concurrency), "--measurement-interval", str(int(seconds * 1000 / 3))]
    argv += ["--max-trials", "3", "--stability-percentage", "1000"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120 + 4 * seconds, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"perf_analyzer exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return parse_perf_analyzer(done.stdout + done.stderr)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def rows_of(system: str, loads: dict[int, dict[str, Any]], generator: str) -> list[dict[str, Any]]:
    return [{"system": system, "generator": generator, "concurrency": c, **figures} for c, figures in loads.items()]


def ray_serve_rows(name: str, concurrency: list[int], seconds: float) -> list[dict[str, Any]]:
    """Ray Serve's proxy on the head node, the echo deployment as one replica on the worker node."""
    from ray import serve

    port = free_port()
    serve.start(proxy_location="HeadOnly", http_options={"host": LOOPBACK, "port": port})
    try:
        ongoing = 2 * max(concurrency)  # Ray Serve's default, 5, would queue requests at the proxy
        deployment = serve.deployment(num_replicas=1, max_ongoing_requests=ongoing, ray_actor_options={"num_cpus": 1})
        application = deployment(Echo).bind()
        serve.run(application, name="echo", route_prefix=SERVE_ROUTE)
        url = f"http://{LOOPBACK}:{port}"
        check_answer(url + SERVE_ROUTE, plain_body(), lambda answer: answer == plain_body())
        loads = {}
        for c in concurrency:
            loads[c] = asyncio_loop(url, SERVE_ROUTE, plain_body(), c, seconds)
            print(f"{name}, c={c}: {loads[c]['req_s']:.0f} req/s, p50 {loads[c]['p50_ms']:.2f} ms", flush=True)
    finally:
        serve.shutdown()
    return rows_of(name, loads, "asyncio loop")


@contextmanager
def served(backend: RayBackend | None) -> Iterator[Serve]:
    io = ([Tensor("x", np.float32, (-1,))], [Tensor("y", np.float32, (-1,))])
    with Serve(http_port=0, grpc_port=None, metrics_port=None, host=LOOPBACK, backend=backend) as server:
        server.bind("identity", identity, *io, config=ModelConfig(max_batch_size=IDENTITY_MAX_BATCH))
        server.run()
        yield server


def pybind_rows(
    name: str, backend: RayBackend | None, concurrency: list[int], seconds: float, binary: str | None
) -> list[dict[str, Any]]:
    with served(backend) as server:
        where = backend.pool.where("identity") if backend is not None else []
        url = server.http_url
        path = "/v2/models/identity/infer"
        check_answer(url + path, kserve_body(), lambda answer: answer["outputs"][0]["data"] == VALUES)
        loads, perf = {}, {}
        for c in concurrency:
            loads[c] = asyncio_loop(url, path, kserve_body(), c, seconds)
            print(f"{name}, c={c}: {loads[c]['req_s']:.0f} req/s, p50 {loads[c]['p50_ms']:.2f} ms", flush=True)
            if binary:
                perf[c] = perf_analyzer(binary, url.removeprefix("http://"), c, seconds)
    rows = rows_of(name, loads, "asyncio loop") + (rows_of(name, perf, "perf_analyzer HTTP") if perf else [])
    for row in rows:
        row["where"] = where
    return rows


def machine() -> dict[str, Any]:
    import ray

    return describe_host(ray=ray.__version__)


def front_cpu_ms(row: dict[str, Any], seconds: float) -> float | None:
    """CPU ms per request of the process that takes the HTTP requests: Ray Serve's proxy, or our front."""
    if "cpu_by_process_s" not in row:
        return None
    fronts = ("ray::ProxyActor", "python -m pybind_serve.front")
    spent = sum(s for name, s in row["cpu_by_process_s"].items() if name.startswith(fronts))
    return float(spent * 1000 / (row["req_s"] * seconds))


def markdown(document: dict[str, Any]) -> str:
    lines = [
        "| front (generator) | concurrency | req/s | p50 ms | p99 ms | server CPU ms / request | of which the "
        "proxy or front process |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in document["rows"]:
        cpu, front = row.get("server_cpu_ms_per_request"), front_cpu_ms(row, document["seconds"])
        lines.append(
            f"| {row['system']} ({row['generator']}) | {row['concurrency']} | {row['req_s']:.0f} | "
            f"{row['p50_ms']:.2f} | {row['p99_ms']:.2f} | {'' if cpu is None else f'{cpu:.2f}'} | "
            f"{'' if front is None else f'{front:.2f}'} |"
        )
    m = document["machine"]
    end = document.get("load_average_at_end")
    return (
        f"{document['date']}, `{document['command']}`, {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, "
        f"Ray {m['ray']}, Python {m['python']}; load average {m['load_average_at_start'][0]:.2f} at the start"
        + (f", {end[0]:.2f} at the end" if end else "")
        + ".\n\n"
        + "\n".join(lines)
        + "\n"
    )


@contextmanager
def ray_cluster(env: dict[str, str]) -> Iterator[None]:
    """A head node with no CPUs (this driver, Ray Serve's controller and proxy, our owner's front) and a worker
    node of two (the models), on loopback, ``env`` set for all their processes; all stopped on leaving."""
    import ray
    from ray.cluster_utils import Cluster

    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    node: dict[str, Any] = {"node_ip_address": LOOPBACK, "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "num_cpus": 0})
    try:
        cluster.add_node(**node, num_cpus=2)
        ray.init(address=cluster.address, _node_ip_address=LOOPBACK, log_to_driver=False)
        yield
    finally:
        ray.shutdown()
        cluster.shutdown()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def default_perf_analyzer() -> str | None:
    found = os.environ.get("PERF_ANALYZER") or str(ROOT / ".venv" / "pabin" / "perf_analyzer")
    return found if Path(found).is_file() else shutil.which("perf_analyzer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="the measured span of each row")
    parser.add_argument("--concurrency", default="1,16", help="connections, comma-separated")
    parser.add_argument(
        "--perf-analyzer",
        nargs="?",
        const="auto",
        default=None,
        help="also load pybind_serve's rows with perf_analyzer over HTTP (PATH; without one: $PERF_ANALYZER, "
        ".venv/pabin or PATH)",
    )
    parser.add_argument(
        "--no-tuned", dest="tuned", action="store_false", help="skip Ray Serve's proxy with its throughput settings"
    )
    add_output_options(parser, "ray_serve_proxy")
    args = parser.parse_args()
    concurrency = [int(c) for c in args.concurrency.split(",") if c]
    binary = default_perf_analyzer() if args.perf_analyzer == "auto" else args.perf_analyzer
    if args.perf_analyzer and not binary:
        raise SystemExit("no perf_analyzer found: pass its path, or set PERF_ANALYZER")
    try:
        import ray.serve  # noqa: F401
    except ImportError as exc:
        raise SystemExit(f"{INSTALL_HINT}\n({exc})") from None

    rows: list[dict[str, Any]] = []
    with ray_cluster({}):
        started = machine()
        rows += ray_serve_rows("Ray Serve proxy → echo deployment (plain JSON)", concurrency, args.seconds)
        for name, backend in (
            ("pybind_serve, RayBackend (shared memory)", RayBackend(node_fronts=False)),
            ("pybind_serve, RayBackend (tcp, CurveZMQ)", RayBackend(transport="tcp", node_fronts=False)),
            ("pybind_serve, no Ray (forked worker)", None),
        ):
            rows += pybind_rows(name, backend, concurrency, args.seconds, binary)
    if args.tuned:
        with ray_cluster(TUNED_ENV):
            name = "Ray Serve proxy, tuned → echo deployment (plain JSON)"
            rows += ray_serve_rows(name, concurrency, args.seconds)
    document = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/ray_serve_proxy.py", *sys.argv[1:]]),
        "machine": started,
        "load_average_at_end": os.getloadavg(),  # other work on this host shows here
        "seconds": args.seconds,
        "tuned_env": TUNED_ENV if args.tuned else None,
        "rows": rows,
    }
    write_results(args.out, args.name, document, markdown(document))


if __name__ == "__main__":
    main()
