"""Sends every dtype of the identity model, once with the optional input and once without it, with
pybind_serve's own client: ``python examples/identity/client.py``."""

from __future__ import annotations

import argparse

import numpy as np

from pybind_serve.client import ModelClient


def inputs(with_mask: bool) -> dict[str, np.ndarray]:
    """One row of each input (the first dim is the batch dimension); the optional ``mask`` only when asked."""
    arrays = {
        "fp32": np.array([[1.5, -2.0, 3.25]], dtype=np.float32),
        "fp16": np.array([[0.5, 1.0]], dtype=np.float16),
        "int8": np.array([[-128, 0, 127]], dtype=np.int8),
        "text": np.array([["héllo wörld".encode()]], dtype=object),  # BYTES: an object array of bytes
    }
    if with_mask:
        arrays["mask"] = np.array([[False]])
    return arrays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="127.0.0.1:8000", help="host:port of the HTTP endpoint")
    args = parser.parse_args()
    with ModelClient(f"http://{args.url}", "identity") as client:
        for with_mask in (True, False):
            outputs = client.infer_batch(inputs(with_mask))
            print(f"with mask={with_mask}:")
            for name in ("fp32", "fp16", "int8", "text", "mask"):
                print(f"  {name}_out:", outputs[f"{name}_out"].tolist())


if __name__ == "__main__":
    main()
