"""Streams reverse_words' answer word by word over gRPC, as it is generated, with pybind_serve's own client:
``python examples/streaming/client.py "the quick brown fox"``.

`DecoupledModelClient` calls gRPC ``ModelStreamInfer`` and yields the outputs of each response as it comes; the
iteration ends with the server's final response. ``client_tritonclient.py`` beside this file does the same with
NVIDIA's ``tritonclient``.
"""

from __future__ import annotations

import argparse

from pybind_serve.client import DecoupledModelClient


def stream_words(url: str, prompt: str) -> list[str]:
    """The words of the model's answer to ``prompt``, printed as each one arrives."""
    words = []
    with DecoupledModelClient(f"grpc://{url}", "reverse_words", timeout_s=30) as client:
        for outputs in client.infer_sample(text_input=[prompt.encode()]):  # one sample: the batch axis is added
            word = outputs["text_output"].item().decode()
            print(word, flush=True)
            words.append(word)
    return words


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt", nargs="?", default="the quick brown fox jumps over the lazy dog")
    parser.add_argument("--url", default="127.0.0.1:8001", help="host:port of the gRPC endpoint")
    args = parser.parse_args()
    stream_words(args.url, args.prompt)


if __name__ == "__main__":
    main()
