"""What a train stage asks of a fit, as plain data: the candidates (`TrainJob`) and the workers (`Scaling`).

Both sides read it: the driver (`training.fit`, `training.plan`, `training.search`) builds it, the
workers (`training.worker`) receive the jobs as dicts. It imports nothing of the project's training code,
so that neither side has to import the other to name what they share.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class TrainJob:
    """Everything a worker needs to train one candidate, as plain data (it crosses a process boundary)."""

    candidate: str
    model_spec: dict[str, Any]
    optim: dict[str, Any]
    task: str
    loss: str
    n_classes: int | None
    data_dir: str  # absolute: workers run in their own working directory
    seed: int
    epochs: int
    batch_size: int  # global; each worker takes batch_size // num_workers
    monitor: str
    mode: str
    patience: int
    use_gpu: bool = False
    precision: str = "32"  # or "bf16-mixed"
    # The loss's weight per class, computed once by the driver from the training split, so every worker of the
    # group (and a resumed one) weighs alike; None: unweighted. class_weighting: the setting that gave them.
    class_weights: list[float] | None = None
    class_weighting: str = "none"

    def fingerprint(self, data_hash: str) -> str:
        """Same job on the same data -> same Ray run name -> a re-run resumes it."""
        blob = json.dumps({**asdict(self), "data": data_hash}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:10]


def group_fingerprint(jobs: list[TrainJob], data_hash: str) -> str:
    """One name for a stage's whole worker group: the same candidates on the same data resume."""
    return hashlib.sha256("".join(job.fingerprint(data_hash) for job in jobs).encode()).hexdigest()[:10]


@dataclass
class Scaling:
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0
    placement_strategy: str = "PACK"
    # One worker in this process (Ray Train's local mode: `cluster.trains_in_process`), on cpus_per_worker threads.
    in_process: bool = False
    # Bytes of memory Ray reserves for each worker (its `memory` resource); None: none reserved. `data_loading:
    # auto` streams a split that would take more than a share of it (`training.plan.data_loading`).
    memory_per_worker: int | None = None
