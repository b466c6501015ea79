"""streaming: a decoupled model that "generates" text token by token: the words of the prompt, reversed.

No real LLM: each step sleeps a little (``--delay-ms``) and yields one word, as a language model yields one
token per decoding step. Requests that arrive together are batched: each step yields one word for every
request of the batch, and each request's stream ends when its own words run out, while the others go on.

Run ``python examples/streaming/server.py`` (HTTP 8000, gRPC 8001, metrics 8002), then
``python examples/streaming/client.py "the quick brown fox"`` (a gRPC stream; ``client_tritonclient.py`` does
the same with tritonclient) or
``curl -N localhost:8000/v2/models/reverse_words/generate_stream -d '{"text_input": "the quick brown fox"}'``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator

import numpy as np

from pybind_serve import ModelConfig, Serve, Tensor, sample


def reverse_words(delay_s: float):  # type: ignore[no-untyped-def]
    """The model: one generator per request (``@sample``), all stepped together, one word per step."""

    @sample
    def generate(text_input: np.ndarray) -> Iterator[dict[str, np.ndarray]]:
        prompt = text_input.item().decode()  # one row of one element: shape [1, 1]
        for word in reversed(prompt.split()):
            time.sleep(delay_s)
            yield {"text_output": np.array([[word.encode()]], dtype=object)}

    return generate


def bind(serve: Serve, delay_ms: float = 50.0) -> None:
    serve.bind(
        "reverse_words",
        reverse_words(delay_ms / 1000),
        inputs=[Tensor("text_input", bytes, (1,))],
        outputs=[Tensor("text_output", bytes, (1,))],
        config=ModelConfig(max_batch_size=8, decoupled=True),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--delay-ms", type=float, default=50.0, help="time per generated word")
    args = parser.parse_args()
    ports = {"http_port": args.http_port, "grpc_port": args.grpc_port, "metrics_port": args.metrics_port}
    with Serve(host=args.host, **ports) as serve:
        bind(serve, args.delay_ms)
        serve.serve()  # prints where it listens; Ctrl-C or SIGTERM stops it


if __name__ == "__main__":
    main()
