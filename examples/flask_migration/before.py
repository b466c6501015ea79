"""The Flask app before the migration: ``POST /predict {"features": [4 numbers]}`` answers
``{"label": ..., "scores": [...]}``, calling the model once per request.

Run ``python examples/flask_migration/before.py --port 5000``, then ``python examples/flask_migration/client.py``.
Compare with ``after.py``: the same routes and answers, the model calls batched.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
from classifier import LABELS, predict
from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

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
    scores = predict(np.array([features], dtype=np.float32))[0]
    return jsonify(label=LABELS[int(scores.argmax())], scores=[round(float(s), 4) for s in scores])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    app.run("127.0.0.1", args.port, threaded=True)  # a thread per request: requests overlap


if __name__ == "__main__":
    main()
