"""Sends every dtype of the identity model, once with the optional input and once without it."""

from __future__ import annotations

import argparse

import numpy as np
import tritonclient.http as httpclient


def request(with_mask: bool) -> list[httpclient.InferInput]:
    arrays = {
        "fp32": np.array([[1.5, -2.0, 3.25]], dtype=np.float32),
        "fp16": np.array([[0.5, 1.0]], dtype=np.float16),
        "int8": np.array([[-128, 0, 127]], dtype=np.int8),
        "text": np.array([["héllo wörld".encode()]], dtype=object),
    }
    if with_mask:
        arrays["mask"] = np.array([[False]])
    inputs = []
    for name, array in arrays.items():
        datatype = {"O": "BYTES", "b": "BOOL"}.get(array.dtype.kind, httpclient.np_to_triton_dtype(array.dtype))
        tensor = httpclient.InferInput(name, array.shape, datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="127.0.0.1:8000")
    args = parser.parse_args()
    with httpclient.InferenceServerClient(args.url) as client:
        for with_mask in (True, False):
            result = client.infer("identity", request(with_mask))
            print(f"with mask={with_mask}:")
            for name in ("fp32", "fp16", "int8", "text", "mask"):
                print(f"  {name}_out:", result.as_numpy(f"{name}_out").tolist())


if __name__ == "__main__":
    main()
