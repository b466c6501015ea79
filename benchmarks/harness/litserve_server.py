"""LitServe (an anchor) serving add_sub on /add_sub and sleepy (batched) on /sleepy, with JSON bodies such as
``{"a": [...], "b": [...]}``; LitServe does not speak KServe. Run by the anchors' virtualenv.

    python litserve_server.py --port P [--sleepy-ms 20] [--max-batch 64]

``decode_request`` and ``encode_response`` carry no annotations on purpose: LitServe builds its endpoint from
them (an annotated request becomes a pydantic-validated body), and its users' usual code has none.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import litserve as ls
import numpy as np


class AddSub(ls.LitAPI):
    def setup(self, device: str) -> None:
        pass

    def decode_request(self, request):  # type: ignore[no-untyped-def]
        return np.asarray(request["a"], np.float32), np.asarray(request["b"], np.float32)

    def predict(self, x: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return x[0] + x[1], x[0] - x[1]

    def encode_response(self, output):  # type: ignore[no-untyped-def]
        return {"add": output[0].tolist(), "sub": output[1].tolist()}


class Sleepy(ls.LitAPI):
    def __init__(self, sleepy_ms: float, **options: Any) -> None:
        super().__init__(**options)
        self.sleepy_s = sleepy_ms / 1000

    def setup(self, device: str) -> None:
        pass

    def decode_request(self, request):  # type: ignore[no-untyped-def]
        return np.asarray(request["x"], np.float32)

    def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
        return np.stack(inputs)

    def predict(self, x: np.ndarray) -> np.ndarray:
        time.sleep(self.sleepy_s)
        return x * 2

    def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
        return list(output)

    def encode_response(self, output):  # type: ignore[no-untyped-def]
        return {"y": output.tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sleepy-ms", type=float, default=20.0)
    parser.add_argument("--max-batch", type=int, default=64)
    args = parser.parse_args()
    # batch_timeout 0 (LitServe's default, as Triton's max_queue_delay): measured here at c=256 it did best,
    # 1,074 req/s against 803 with 10 ms and 471 with 50 ms
    sleepy = Sleepy(args.sleepy_ms, max_batch_size=args.max_batch, batch_timeout=0.0, api_path="/sleepy")
    server = ls.LitServer([AddSub(api_path="/add_sub"), sleepy], accelerator="cpu", workers_per_device=1)
    server.run(host="127.0.0.1", port=args.port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
