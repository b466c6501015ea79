"""Sends the same requests to ``before.py`` or ``after.py`` from 32 threads and prints every answer, in order.

    python examples/flask_migration/client.py [--url http://127.0.0.1:5000] [--requests 64] [--concurrency 32]

The last request is malformed on purpose, to compare the error answers too.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np


def payloads(count: int) -> list[dict[str, Any]]:
    """``count - 1`` flowers measured to a tenth of a cm (the same every run), then one malformed request."""
    rng = np.random.default_rng(0)
    flowers = rng.uniform([4.3, 2.0, 1.0, 0.1], [7.9, 4.4, 6.9, 2.5], size=(count - 1, 4)).round(1)
    return [{"features": row} for row in flowers.tolist()] + [{"features": [5.1, 3.5]}]


def post(url: str, payload: dict[str, Any]) -> tuple[int, Any]:
    data = json.dumps(payload).encode()
    request = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.load(error)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:5000")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    sent = payloads(args.requests)
    started = time.monotonic()
    with ThreadPoolExecutor(args.concurrency) as pool:
        answers = list(pool.map(lambda payload: post(f"{args.url}/predict", payload), sent))
    elapsed = time.monotonic() - started
    for i, (payload, (status, body)) in enumerate(zip(sent, answers, strict=True)):
        print(i, json.dumps(payload["features"]), status, json.dumps(body, sort_keys=True))
    print(f"{len(sent)} requests in {elapsed:.2f} s")


if __name__ == "__main__":
    main()
