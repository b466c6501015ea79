"""Calls add_sub with tritonclient, the client Triton users already have: ``python
examples/add_sub/client_tritonclient.py``.

It needs NVIDIA's client, which pybind_serve does not install: ``pip install 'tritonclient[all]'``.
``--protocol grpc`` calls it over gRPC instead (port 8001); tritonclient's HTTP and gRPC clients share an API.
``client.py`` beside this file does the same with pybind_serve's own client.
"""

from __future__ import annotations

import argparse

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

CLIENTS = {"http": (httpclient, "127.0.0.1:8000"), "grpc": (grpcclient, "127.0.0.1:8001")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", choices=sorted(CLIENTS), default="http")
    parser.add_argument("--url", help="host:port (default: 127.0.0.1:8000 for http, 127.0.0.1:8001 for grpc)")
    args = parser.parse_args()
    tritonclient, default_url = CLIENTS[args.protocol]
    a = np.arange(16, dtype=np.float32).reshape(1, 16)
    b = np.ones((1, 16), dtype=np.float32)
    with tritonclient.InferenceServerClient(args.url or default_url) as client:
        inputs = [
            tritonclient.InferInput("a", list(a.shape), "FP32"),
            tritonclient.InferInput("b", list(b.shape), "FP32"),
        ]
        inputs[0].set_data_from_numpy(a)
        inputs[1].set_data_from_numpy(b)
        result = client.infer("add_sub", inputs)
        print("add:", result.as_numpy("add").tolist())
        print("sub:", result.as_numpy("sub").tolist())


if __name__ == "__main__":
    main()
