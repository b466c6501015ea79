"""The Flask app after the migration: the same route, URL and JSON as ``before.py``; the model call inside
the handler goes through pybind_serve, which batches the calls of concurrent requests.

Run ``python examples/flask_migration/after.py --port 5000``, then ``python examples/flask_migration/client.py``.
The lines marked ``# new`` and ``# changed`` are the whole migration.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

import numpy as np
from classifier import LABELS, predict
from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

from pybind_serve import ModelConfig, Serve, Tensor, batch  # new
from pybind_serve.integrations.flask import BatchedModel  # new


@batch  # new: the model, as pybind_serve calls it (one call per batch)
def classifier(features: np.ndarray) -> dict[str, np.ndarray]:
    return {"scores": predict(features)}


serve = Serve(http_port=0, grpc_port=None, metrics_port=0)  # new: loopback HTTP only, on free ports
serve.bind(  # new
    "classifier",
    classifier,
    inputs=[Tensor("features", np.float32, (4,))],
    outputs=[Tensor("scores", np.float32, (3,))],
    config=ModelConfig(max_batch_size=64),
)
batched_predict = BatchedModel(serve, "classifier")  # new

app = Flask(__name__)


def is_features(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 4
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )


@app.post("/predict")
def predict_route() -> ResponseReturnValue:
    payload = request.get_json(silent=True)
    features = payload.get("features") if isinstance(payload, dict) else None
    if not is_features(features):
        return jsonify(error='send {"features": [sepal length, sepal width, petal length, petal width]}'), 400
    scores = batched_predict(features=np.array([features], dtype=np.float32))["scores"][0]  # changed
    return jsonify(label=LABELS[int(scores.argmax())], scores=[round(float(s), 4) for s in scores])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # new: SIGTERM leaves the with block, which stops serve
    with serve:  # new
        serve.run()  # new
        print(f"model server at {serve.http_url}, metrics at {serve.metrics_url}", flush=True)  # new
        app.run("127.0.0.1", args.port, threaded=True)  # a thread per request: requests overlap, and batch


if __name__ == "__main__":
    main()
