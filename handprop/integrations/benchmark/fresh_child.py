"""One real training run in a fresh process, for ``handprop bench`` (see :mod:`.fresh`).

Run as a script: ``python fresh_child.py JOB_JSON``; prints one JSON line: per epoch
its seconds and the process's minor page faults, the engine that ran, where handprop
was imported from and the last epoch's cost. The handprop side uses only the stable
public API (``presets``, ``TrainConfig``, ``fit``), so that the handprop imported may
be another source tree (a git worktree of an earlier commit: ``bench --baseline``).
"""

from __future__ import annotations

import json
import os
import sys
import time

if sys.path and sys.path[0] == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)  # this folder's modules must not shadow top-level names

try:
    import resource
except ImportError:  # not on Windows: no page-fault counts
    resource = None


def faults() -> int:
    """Minor page faults of this process so far (all threads), or -1 if unknown."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt if resource else -1


def make_data(work: dict) -> tuple:
    """Random images in [0, 1) and labels 0-9, (R, N, ...) with replicas else (N, ...)."""
    import numpy as np

    rng = np.random.default_rng(0)
    lead = (work["replicas"],) if work["replicas"] else ()
    x = rng.random((*lead, work["images"], *work["input_shape"])).astype(work["dtype"])
    return x, rng.integers(0, 10, (*lead, work["images"]))


def make_net(work: dict):
    """The workload's handprop network with fresh parameters (seeds 0..R-1)."""
    from handprop.core.presets import lenet, small_cnn

    net = {"lenet": lenet, "small": small_cnn}[work["net"]](input_shape=tuple(work["input_shape"]))
    seeds = list(range(work["replicas"])) or None
    return net.init(0, dtype=work["dtype"], replicas=seeds)


def run_handprop(job: dict, x, y) -> dict:
    """``fit`` over the workload (``runs`` times, fresh weights each time); a mark (time,
    faults) before the first and after every epoch."""
    import handprop
    from handprop.training.loop import TrainConfig, fit

    work, threads = job["workload"], job["workers"]
    config = TrainConfig(epochs=work["epochs"], batch_size=work["batch_size"],
                         optimizer=work["optimizer"], lr=work["lr"], momentum=work["momentum"],
                         shuffle=work["shuffle"], dtype=work["dtype"], loss="softmax_ce",
                         reduction="mean")
    if job["engine"] != "numpy":  # load (or compile) the kernels first: not the epoch's time
        part = (slice(None), slice(2)) if work["replicas"] else slice(2)
        warm = TrainConfig(**{**config.to_dict(), "epochs": 1})
        fit(make_net(work), x[part], y[part], warm, engine=job["engine"], threads=threads)
    marks = [(time.perf_counter(), faults())]
    for _ in range(work["runs"]):
        history = fit(make_net(work), x, y, config, engine=job["engine"], threads=threads,
                      on_epoch=lambda epoch, history: marks.append((time.perf_counter(),
                                                                    faults())))
    cost = history.cost[-1]
    return {"marks": marks, "engine": history.extra.get("engine"),
            "handprop": os.path.dirname(handprop.__file__), "cost": float(cost.mean())}


def run_torch(job: dict, x, y) -> dict:
    """The same work in PyTorch: a twin per seed, trained one after another each epoch."""
    import torch

    torch.set_num_threads(job["workers"])
    from handprop.integrations.benchmark.torch_rows import fresh_torch_run

    return fresh_torch_run(job["workload"], x, y, faults)


def main() -> None:
    job = json.loads(sys.argv[1])
    x, y = make_data(job["workload"])
    run = run_handprop if job["library"] == "handprop" else run_torch
    print(json.dumps(run(job, x, y)))


if __name__ == "__main__":
    main()
