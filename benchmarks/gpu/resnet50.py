"""GPU scenario: ResNet-50 (random weights, fp16, channels-last) served with dynamic batching, beside the
same model's offline throughput at the same batch size, in one run.

Clients send uint8 224x224x3 images (the model casts on the GPU) in requests of ``--images-per-request``
images, from ``--clients`` processes of ``--threads`` threads each, through `pybind_serve.client.ModelClient`
over HTTP and gRPC; the model returns the top-1 class of each image (int64), so the answer path stays small.
Served images/s are counted over ``--seconds`` after a warm-up. The model is bound as a class (`ResNet50`), so
each worker builds its own copy where it runs: with ``--devices`` (``all``, or ``cuda:0,cuda:1``) in worker
processes placed on those GPUs, ``--instances`` on each; else in the binding process (or ``--instances`` worker
processes). Offline throughput is measured in the binding process first, so CUDA is initialised there before
``bind``, as in a notebook that tried the model before serving it. Each protocol runs twice: tensors in the
requests (the network path), and through system shared memory (``ModelClient(..., shared_memory=True)``: the
images written into a registered /dev/shm region, the labels read back from it). The labels leave the GPU as a
torch tensor, copied from the device straight into shared memory.

    python benchmarks/gpu/resnet50.py --devices all --instances 4   # on a CUDA machine
    python benchmarks/gpu/resnet50.py --device cpu --tiny --batch 4 --seconds 2 --images-per-request 2   # smoke

Writes ``<out>/<name>.json`` and ``.md`` (``--name``, default gpu_resnet50).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from pybind_serve import batch

HERE = Path(__file__).resolve().parent


def build_model(device: str, tiny: bool) -> Any:
    import torch

    torch.backends.cudnn.benchmark = True
    if tiny:  # smoke runs on machines whose torchvision does not load: one conv, pooled, 1000 classes
        layers = [
            torch.nn.Conv2d(3, 8, 7, 4),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(8, 1000),
        ]
        model = torch.nn.Sequential(*layers).eval().to(device)
    else:
        import torchvision

        model = torchvision.models.resnet50(weights=None).eval().to(device)
    if device != "cpu":
        model = model.half()
    return model.to(memory_format=torch.channels_last)


def make_forward(model: Any, device: str):  # type: ignore[no-untyped-def]
    """uint8 NHWC numpy (or tensor) -> top-1 class per image; the cast happens on the device."""
    import torch

    dtype = torch.float16 if device != "cpu" else torch.float32

    @torch.inference_mode()
    def forward(images: Any) -> Any:
        x = images if isinstance(images, torch.Tensor) else torch.from_numpy(images)
        x = x.to(device, non_blocking=True).permute(0, 3, 1, 2).to(dtype).div_(255)
        x = x.contiguous(memory_format=torch.channels_last)
        return model(x).argmax(1)

    return forward


def offline(model: Any, device: str, batch: int, seconds: float) -> dict[str, float]:
    import torch

    forward = make_forward(model, device)
    images = torch.randint(0, 256, (batch, 224, 224, 3), dtype=torch.uint8, device=device)
    for _ in range(10):
        forward(images)
    sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    sync()
    iterations, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(10):
            forward(images)
        sync()
        iterations += 10
    elapsed = time.perf_counter() - started
    return {"batch": batch, "images_per_s": iterations * batch / elapsed, "ms_per_batch": elapsed / iterations * 1e3}


def client_process(
    url: str, shared_memory: bool, images: int, threads: int, warmup_s: float, seconds: float, results: Any
) -> None:
    from pybind_serve.client import ModelClient

    rng = np.random.default_rng(os.getpid())
    batch = rng.integers(0, 256, (images, 224, 224, 3), dtype=np.uint8)
    start_at = time.monotonic() + warmup_s
    stop_at = start_at + seconds
    latencies: list[float] = []
    done = [0]
    lock = threading.Lock()

    def loop() -> None:
        with ModelClient(url, "resnet50", timeout_s=120, shared_memory=shared_memory) as client:
            while (now := time.monotonic()) < stop_at:
                out = client.infer_batch(image=batch)
                end = time.monotonic()
                assert out["label"].shape == (images, 1)
                if now >= start_at:
                    with lock:
                        done[0] += images
                        latencies.append(end - now)

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    results.put((done[0], latencies))


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def served(
    url: str, shared_memory: bool, args: argparse.Namespace, front_pids: list[int], model_pids: list[int]
) -> dict[str, Any]:
    context = mp.get_context("spawn")
    results = context.Queue()
    procs = [
        context.Process(
            target=client_process,
            args=(url, shared_memory, args.images_per_request, args.threads, args.warmup, args.seconds, results),
        )
        for _ in range(args.clients)
    ]
    for p in procs:
        p.start()
    time.sleep(args.warmup)
    cpu0, t0 = sum(cpu_seconds(pid) for pid in front_pids), time.monotonic()
    own0 = sum(cpu_seconds(pid) for pid in model_pids)
    time.sleep(args.seconds)
    cpu1, t1 = sum(cpu_seconds(pid) for pid in front_pids), time.monotonic()
    own1 = sum(cpu_seconds(pid) for pid in model_pids)
    images, latencies = 0, []
    for _ in procs:
        n, lat = results.get(timeout=args.seconds + 300)
        images += n
        latencies += lat
    for p in procs:
        p.join(60)
    latencies.sort()
    requests = len(latencies)
    return {
        "url": url,
        "images_per_s": images / args.seconds,
        "requests_per_s": requests / args.seconds,
        "pixels_MB_per_s": images * 224 * 224 * 3 / args.seconds / 1e6,
        "p50_ms": statistics.median(latencies) * 1e3 if latencies else None,
        "p99_ms": latencies[int(0.99 * (requests - 1))] * 1e3 if latencies else None,
        "front_cpu_percent": (cpu1 - cpu0) / (t1 - t0) * 100,
        "model_process_cpu_percent": (own1 - own0) / (t1 - t0) * 100,
    }


def children() -> list[int]:
    me, found = os.getpid(), []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == me:
                found.append(int(entry))
    return found


def server_processes() -> tuple[list[int], list[int]]:
    """The front processes and the model's worker processes (``--instances``), all children of this one."""
    fronts: list[int] = []
    workers: list[int] = []
    for pid in children():
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            is_front = b"pybind_serve.front.process" in f.read()
        (fronts if is_front else workers).append(pid)
    return fronts, workers


def measure_offline(args: argparse.Namespace) -> tuple[str, dict[str, float]]:
    """Offline throughput, in this process (which initialises CUDA here, before any model is bound)."""
    import torch

    name = torch.cuda.get_device_name() if args.device != "cpu" else platform.processor() or "cpu"
    model = build_model(args.device, args.tiny)
    figures = offline(model, args.device, args.batch, args.seconds)
    del model
    if args.device != "cpu":
        torch.cuda.empty_cache()
    return name, figures


class ResNet50:
    """The served model: built once in each worker, on the worker's device (``DEVICE`` where the worker has none:
    the binding process, or CPU instances)."""

    DEVICE = "cuda"
    TINY = False

    def __init__(self, context: Any) -> None:
        self.device = context.device if context.device != "cpu" else self.DEVICE
        self.forward = make_forward(build_model(self.device, self.TINY), self.device)

    @batch
    def __call__(self, image: np.ndarray) -> dict[str, Any]:
        return {"label": self.forward(image)[:, None]}  # a torch tensor on the GPU: written out from there


def config_of(url: str) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(f"{url}/v2/models/resnet50/config", timeout=60) as answer:
        return dict(json.loads(answer.read()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=64, help="max_batch_size, and the offline batch")
    parser.add_argument("--images-per-request", type=int, default=16)
    parser.add_argument("--clients", type=int, default=6, help="client processes")
    parser.add_argument("--threads", type=int, default=4, help="threads (requests in flight) per client")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--delay-us", type=int, default=2000, help="max_queue_delay_us of the batcher")
    parser.add_argument("--tiny", action="store_true", help="a one-layer stand-in model, for smoke runs")
    parser.add_argument(
        "--instances", type=int, default=None, help="per device with --devices; else worker processes (None: none)"
    )
    parser.add_argument("--devices", default=None, help="'all' or cuda:0,cuda:1 (None: no placement)")
    parser.add_argument("--fronts", type=int, default=1, help="front processes (Serve(fronts=N))")
    parser.add_argument("--paths", default="http,grpc", help="protocols to serve over")
    parser.add_argument("--no-shm", action="store_true", help="only the network paths (tensors in the requests)")
    parser.add_argument(
        "--out",
        type=Path,
        default=HERE.parent / "results" / "local",
        help="results folder (default benchmarks/results/local, which git ignores)",
    )
    parser.add_argument("--name", default="gpu_resnet50", help="results file stem")
    args = parser.parse_args()

    import torch

    from pybind_serve import DynamicBatcher, ModelConfig, Serve, Tensor
    from pybind_serve.client import ModelClient

    device_name, offline_figures = measure_offline(args)
    result: dict[str, Any] = {
        "scenario": "ResNet-50 fp16 channels-last, random weights, uint8 224x224x3 in, top-1 class out",
        "device": device_name,
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "options": {k: str(v) for k, v in vars(args).items()},
        "offline": offline_figures,
    }
    print("offline", result["offline"], flush=True)

    ResNet50.DEVICE, ResNet50.TINY = args.device, args.tiny
    devices = None if args.devices is None else "all" if args.devices == "all" else args.devices.split(",")
    batcher = DynamicBatcher(max_queue_delay_us=args.delay_us)
    config = ModelConfig(max_batch_size=args.batch, batcher=batcher, instances=args.instances, devices=devices)
    serving = Serve(
        http_port=0, grpc_port=0, metrics_port=0, system_shared_memory=True, startup_timeout_s=300, fronts=args.fronts
    )
    with serving as serve:
        started = time.monotonic()
        serve.bind(
            "resnet50",
            ResNet50,
            [Tensor("image", np.uint8, (224, 224, 3))],
            [Tensor("label", np.int64, (1,))],
            config=config,
        )
        serve.run()
        result["ready_s"] = time.monotonic() - started  # every instance built its model
        result["instance_group"] = config_of(serve.http_url)["instance_group"]
        with ModelClient(serve.http_url, "resnet50", timeout_s=300) as client:  # every worker loads its model
            warm = np.zeros((args.batch, 224, 224, 3), np.uint8)
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda _: client.infer_batch(image=warm), range(16 * (args.instances or 1))))
        fronts, workers = server_processes()
        model_pids = workers or [os.getpid()]
        paths = {"http": serve.http_url, "grpc": f"grpc://{serve.grpc_url}"}
        result["served"] = {}
        for name in args.paths.split(","):
            url = paths[name]
            for shared_memory in (False,) if args.no_shm else (False, True):
                label = f"{name} + system shm" if shared_memory else name
                figures = served(url, shared_memory, args, fronts, model_pids)
                figures["ratio_to_offline"] = figures["images_per_s"] / result["offline"]["images_per_s"]
                result["served"][label] = figures
                print(label, figures, flush=True)

    # Offline again, after serving: the GPU's speed drifts between runs (9,800-14,000 img/s seen on one H200),
    # so the ratios are taken to the faster of the two measurements, the stricter comparison.
    _, after = measure_offline(args)
    result["offline_before"], result["offline_after"] = result["offline"], after
    result["offline"] = max(result["offline"], after, key=lambda figures: figures["images_per_s"])
    for figures in result["served"].values():
        figures["ratio_to_offline"] = figures["images_per_s"] / result["offline"]["images_per_s"]
    print("offline after", after, flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# GPU scenario: ResNet-50 served vs offline",
        "",
        f"{result['device']}, torch {result['torch']}, {result['cpus']} CPUs; batch {args.batch}; requests of "
        f"{args.images_per_request} images from {args.clients} processes x {args.threads} threads; "
        f"instance groups {result['instance_group']} (devices {args.devices}, instances {args.instances}), "
        f"{args.fronts} front process(es), every "
        f"instance ready {result['ready_s']:.1f} s after bind; CUDA initialised in the binding process first; "
        f"{args.seconds:g} s windows.",
        "",
        "| path | images/s | ratio to offline | req/s | pixels MB/s | p50 ms | p99 ms | front CPU % "
        "| model process CPU % |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| offline (batch {args.batch}; before / after serving: {result['offline_before']['images_per_s']:.0f} / "
        f"{result['offline_after']['images_per_s']:.0f}) | {result['offline']['images_per_s']:.0f} | 1.00 "
        "| | | | | | |",
    ]
    for name, f in result["served"].items():
        lines.append(
            f"| {name} | {f['images_per_s']:.0f} | {f['ratio_to_offline']:.2f} | {f['requests_per_s']:.0f} | "
            f"{f['pixels_MB_per_s']:.0f} | {f['p50_ms'] or 0:.1f} | {f['p99_ms'] or 0:.1f} | "
            f"{f['front_cpu_percent'] or 0:.0f} | {f['model_process_cpu_percent']:.0f} |"
        )
    (args.out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
