"""Calls add_sub with pybind_serve's own client: ``python examples/add_sub/client.py``.

``--protocol grpc`` calls it over gRPC instead (port 8001). Nothing to install beyond pybind_serve itself;
``client_tritonclient.py`` beside this file does the same with NVIDIA's ``tritonclient``.
"""

from __future__ import annotations

import argparse

import numpy as np

from pybind_serve.client import ModelClient

DEFAULT_URLS = {"http": "127.0.0.1:8000", "grpc": "127.0.0.1:8001"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", choices=sorted(DEFAULT_URLS), default="http")
    parser.add_argument("--url", help="host:port (default: 127.0.0.1:8000 for http, 127.0.0.1:8001 for grpc)")
    args = parser.parse_args()
    url = f"{args.protocol}://{args.url or DEFAULT_URLS[args.protocol]}"
    a = np.arange(16, dtype=np.float32).reshape(1, 16)  # one row: the first dim is the batch dimension
    b = np.ones((1, 16), dtype=np.float32)
    with ModelClient(url, "add_sub") as client:
        outputs = client.infer_batch(a=a, b=b)
    print("add:", outputs["add"].tolist())
    print("sub:", outputs["sub"].tolist())


if __name__ == "__main__":
    main()
