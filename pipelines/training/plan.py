"""How a train stage's fit runs: the one place that decides it, for the stage, the flow and the run's Ray head.

`needs_ray` answers, without starting anything, whether a dataset's train stage joins a Ray instance
(the flow starts the run's Ray head only for those); `scaling` resolves the workers once the stage knows
(`num_workers: auto` on a cluster asks the joined Ray instance what it has).
"""

from __future__ import annotations

import os
from pathlib import Path

from pipelines.config import ComputeParams
from pipelines.training.cluster import auto_workers, local_cpu_share, trains_in_process
from pipelines.training.job import Scaling


def in_process(compute: ComputeParams) -> bool:
    """One worker in the stage's own process (Ray Train's local mode): `auto` on this machine's own CPUs."""
    return trains_in_process(compute.num_workers, compute.use_gpu, os.environ.get("RAY_ADDRESS"))


def needs_ray(compute: ComputeParams, searching: bool, streaming: bool = False) -> bool:
    """Whether the train stage needs a Ray instance: a worker group, Tune's trials (a search), or Ray Data
    (`data_loading: stream`; under `auto` the stage starts one itself when it decides to stream)."""
    return searching or streaming or not in_process(compute)


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
        memory_per_worker=int(compute.memory_per_worker) if compute.memory_per_worker else None,
    )


# A split "fits comfortably" in a worker when its arrays take at most this share of the worker's memory: the
# worker also holds torch, the model, its optimizer state, a batch's activations and, briefly, a second copy
# of the split while it is read (Parquet -> NumPy -> the device).
MEMORY_SHARE = 0.25


def data_loading(setting: str, prepared_dir: Path, scaling: Scaling) -> tuple[str, str]:
    """(memory | stream, why): `auto` keeps the splits in memory when train + val fit comfortably in a worker's
    share of memory (MEMORY_SHARE of `memory_per_worker`, else of this machine's available memory divided
    among the workers that share it), and streams them otherwise."""
    from pipelines.handoffs.splits import split_nbytes

    if setting != "auto":
        return setting, f"data_loading: {setting}"
    need = sum(split_nbytes(prepared_dir / split) for split in ("train", "val"))
    if scaling.memory_per_worker:
        share, whose = scaling.memory_per_worker, "train.memory_per_worker"
    else:
        share, whose = available_memory() // max(1, scaling.num_workers), "this machine's available memory / workers"
    loading = "memory" if need <= MEMORY_SHARE * share else "stream"
    return (
        loading,
        f"auto: train + val take {need / 2**20:.1f} MiB, a worker's share is {share / 2**20:.0f} MiB ({whose})",
    )


def available_memory() -> int:
    """Bytes this machine can still give (MemAvailable), or its total memory where /proc/meminfo is not there."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
