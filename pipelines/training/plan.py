"""How a train stage's fit runs: the one place that decides it, for the stage, the flow and the run's Ray head.

`needs_ray` answers, without starting anything, whether a dataset's train stage joins a Ray instance
(the flow starts the run's Ray head only for those); `scaling` resolves the workers once the stage knows
(`num_workers: auto` on a cluster asks the joined Ray instance what it has).
"""

from __future__ import annotations

import os

from pipelines.config import ComputeParams
from pipelines.training.cluster import auto_workers, local_cpu_share, trains_in_process
from pipelines.training.job import Scaling


def in_process(compute: ComputeParams) -> bool:
    """One worker in the stage's own process (Ray Train's local mode): `auto` on this machine's own CPUs."""
    return trains_in_process(compute.num_workers, compute.use_gpu, os.environ.get("RAY_ADDRESS"))


def needs_ray(compute: ComputeParams, searching: bool) -> bool:
    """Whether the train stage needs a Ray instance: a worker group, or Tune's trials (a search)."""
    return searching or not in_process(compute)


def scaling(compute: ComputeParams, local_mode: bool = False) -> Scaling:
    """The workers this machine (or RAY_ADDRESS's cluster) gets: `auto` resolved on the joined Ray instance.

    local_mode: `auto` on this machine's CPUs (`in_process`): one worker in this process, holding this
    stage's share of the cores; no Ray instance is asked.
    """
    num_workers, cpus_per_worker = compute.num_workers, compute.cpus_per_worker
    if local_mode:
        num_workers, cpus_per_worker = 1, float(local_cpu_share())
    elif num_workers == "auto":
        num_workers, cpus_per_worker = auto_workers(compute.use_gpu, compute.cpus_per_worker)
    return Scaling(
        num_workers=num_workers,
        use_gpu=compute.use_gpu,
        cpus_per_worker=cpus_per_worker,
        gpus_per_worker=compute.gpus_per_worker,
        placement_strategy=compute.placement_strategy,
        in_process=local_mode,
    )
