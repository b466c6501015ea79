"""The model both Flask apps serve: a linear iris classifier, 4 measurements (cm) in, 3 class scores out.

It stands for a real model on one accelerator: a call costs ``COST_S`` (5 ms) whatever the batch size, and
runs one call at a time. The arithmetic is element-wise, so a row's scores are the same bits whether it is
scored alone or in a batch.
"""

from __future__ import annotations

import threading
import time

import numpy as np

LABELS = ("setosa", "versicolor", "virginica")
COST_S = 0.005
WEIGHTS = np.array(  # one row per feature: sepal length, sepal width, petal length, petal width
    [[0.42, 0.11, -0.53], [0.97, -0.28, -0.69], [-2.45, 0.19, 2.26], [-1.08, -0.86, 1.94]], dtype=np.float32
)
BIAS = np.array([0.26, 1.64, -1.90], dtype=np.float32)

_device = threading.Lock()  # one call at a time, as on one GPU


def predict(features: np.ndarray) -> np.ndarray:
    """Class scores, shape [n, 3], for a batch of measurements, shape [n, 4] (float32)."""
    with _device:
        time.sleep(COST_S)
        scores = BIAS + np.zeros((len(features), 1), dtype=np.float32)
        for i, weights in enumerate(WEIGHTS):
            scores = scores + features[:, i : i + 1] * weights
        return scores
