"""Calls add_sub with tritonclient, the client Triton users already have: ``python examples/add_sub/client.py``."""

from __future__ import annotations

import argparse

import numpy as np
import tritonclient.http as httpclient


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="127.0.0.1:8000")
    args = parser.parse_args()
    a = np.arange(16, dtype=np.float32).reshape(1, 16)
    b = np.ones((1, 16), dtype=np.float32)
    with httpclient.InferenceServerClient(args.url) as client:
        inputs = [httpclient.InferInput("a", a.shape, "FP32"), httpclient.InferInput("b", b.shape, "FP32")]
        inputs[0].set_data_from_numpy(a)
        inputs[1].set_data_from_numpy(b)
        result = client.infer("add_sub", inputs)
        print("add:", result.as_numpy("add").tolist())
        print("sub:", result.as_numpy("sub").tolist())


if __name__ == "__main__":
    main()
