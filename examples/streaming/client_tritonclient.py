"""Streams reverse_words' answer word by word over gRPC with tritonclient, as it is generated:
``python examples/streaming/client_tritonclient.py "the quick brown fox"``.

It needs NVIDIA's client, which pybind_serve does not install: ``pip install 'tritonclient[all]'``;
``client.py`` beside this file does the same with pybind_serve's own client.

``triton_enable_empty_final_response`` asks the server for an empty last response with
``triton_final_response`` set, so the client knows the stream is over however many words came.
"""

from __future__ import annotations

import argparse
import queue
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient


def stream_words(url: str, prompt: str) -> list[str]:
    """The words of the model's answer to ``prompt``, printed as each one arrives."""
    answers: queue.Queue[Any] = queue.Queue()
    text = grpcclient.InferInput("text_input", [1, 1], "BYTES")
    text.set_data_from_numpy(np.array([[prompt.encode()]], dtype=object))
    words = []
    with grpcclient.InferenceServerClient(url) as client:
        client.start_stream(callback=lambda result, error: answers.put(error or result))
        client.async_stream_infer("reverse_words", [text], enable_empty_final_response=True)
        while True:
            answer = answers.get(timeout=30)
            if isinstance(answer, Exception):
                raise answer
            if answer.get_response().parameters["triton_final_response"].bool_param:
                break
            word = answer.as_numpy("text_output").item().decode()
            print(word, flush=True)
            words.append(word)
        client.stop_stream()
    return words


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt", nargs="?", default="the quick brown fox jumps over the lazy dog")
    parser.add_argument("--url", default="127.0.0.1:8001", help="host:port of the gRPC endpoint")
    args = parser.parse_args()
    stream_words(args.url, args.prompt)


if __name__ == "__main__":
    main()
