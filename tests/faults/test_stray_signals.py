"""A SIGTERM that reaches a worker process directly (systemd's default KillMode signals the whole cgroup, some
inits the whole process group) does not end its batch: workers ignore SIGTERM; the owner, which drains on its own
SIGTERM, stops them with their own signal (`worker_process.STOP_SIGNAL`)."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import numpy as np

from pybind_serve import ModelConfig, Serve, Tensor, batch
from pybind_serve.client import ModelClient
from tests.conftest import child_pids, wait_until


@batch
def slow_pid(x: np.ndarray) -> dict[str, np.ndarray]:
    time.sleep(float(x[0, 0]))
    return {"pid": np.full((x.shape[0], 1), os.getpid(), np.int64)}


def test_a_stray_sigterm_to_a_worker_does_not_cut_its_batch_and_stop_still_stops_it() -> None:
    with Serve(http_port=0, grpc_port=None, metrics_port=None) as serve:
        serve.bind(
            "slow_pid",
            slow_pid,
            [Tensor("x", np.float32, (1,))],
            [Tensor("pid", np.int64, (1,))],
            config=ModelConfig(max_batch_size=1, instances=1),
        )
        serve.run()
        with ModelClient(serve.http_url, "slow_pid") as client:
            pid = int(client.infer_sample(x=np.zeros(1, np.float32))["pid"][0])
            answers: list[Any] = []
            call = threading.Thread(target=lambda: answers.append(client.infer_sample(x=np.ones(1, np.float32))))
            call.start()
            time.sleep(0.3)  # the batch is in the function now
            os.kill(pid, signal.SIGTERM)
            call.join(10)
            assert answers and int(answers[0]["pid"][0]) == pid  # answered, by the same process
            assert int(client.infer_sample(x=np.zeros(1, np.float32))["pid"][0]) == pid  # and it lives on
    assert wait_until(lambda: pid not in child_pids(), 10)  # stop() stopped it
