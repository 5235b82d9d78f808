"""What each Ray Train worker runs: every candidate of the stage, one after another, in this process.

One Lightning Trainer per candidate (its own early stopping, history and best epochs), all in
the same worker group. After a restart (a lost worker, or the driver re-run with the same run
name) the candidates Ray's latest checkpoint lists as done are skipped, and the one in flight
resumes from that checkpoint (`training.progress`).
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.training import store
from pipelines.training.data import TrainData, data_for
from pipelines.training.job import TrainJob
from pipelines.training.runtime import Runtime, runtime_for

if TYPE_CHECKING:
    from pipelines.training.callbacks import StageProgress


# Below this many multiply-adds per step (per worker), one intra-op thread beats several: each op
# of a small model is a parallel region whose barrier waits for every OpenMP thread, and on a busy
# machine a waiting thread costs a scheduler slice. Measured on 2 cores under load (BENCHMARKS.md):
# the default FNN (10-64-32-2, batch 64) at 1.0-1.7 ms/step with one thread, 23-111 ms with two.
SMALL_STEP_MACS = 4_000_000


def step_macs(job: TrainJob, module, per_worker_batch: int) -> int:
    """A rough count of a step's multiply-adds: parameters x rows, x positions where weights are shared."""
    shape = job.model_spec.get("input_shape") or [1]
    family = job.model_spec["family"]
    positions = 1
    if family == "cnn":
        positions = max(1, math.prod(shape[1:]))  # weights reused at every pixel
    elif family in ("lstm", "gru"):
        positions = max(1, int(shape[0]))  # and at every time step
    return sum(p.numel() for p in module.parameters()) * per_worker_batch * positions


def _use_reserved_cpus(cpus: float, small_step: bool = False) -> None:
    """One intra-op thread per CPU this worker reserved (not whatever OMP_NUM_THREADS the
    environment happened to carry): two 1-CPU workers on two cores must not oversubscribe.
    A model whose steps are tiny gets one thread (SMALL_STEP_MACS)."""
    import torch

    if cpus >= 1:
        torch.set_num_threads(1 if small_step else int(cpus))


def _record_placement(where: str, rank: int, runtime: Runtime, fence: store.Fence, **trained: Any) -> None:
    """Each rank notes where it trains this candidate, on the run's (shared) storage.

    trained: what the rank holds once the fit is done (`training.rank_check`), added to the same record.
    """
    import socket

    fence.check()
    record = {
        "rank": rank,
        "node_id": runtime.node_id(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "cpus": runtime.cpus(),
        "in_process": runtime.in_process,
        **trained,
    }
    store.write_json(f"{where}/placement/rank{rank}.json", record)


def train_worker(config: dict[str, Any]) -> None:
    """Runs in each Ray Train worker (in local mode: in the stage's own process): config holds the jobs, the run's
    storage, keep, score and, in local mode, the CPUs it may use."""
    import ray.train

    from pipelines.training.callbacks import StageProgress
    from pipelines.training.progress import discard_resume_copy, report
    from pipelines.training.ray_logging import quiet

    quiet()  # Ray Train configures its loggers after the setup hook ran
    runtime = runtime_for(config)
    _use_reserved_cpus(runtime.cpus())
    rank = ray.train.get_context().get_world_rank()
    fence = store.Fence(config["run_uri"], config.get("attempt"), raylet=None if runtime.in_process else os.getppid())
    finished, current, ckpt = runtime.resume_point()
    jobs = [TrainJob(**fields) for fields in config["jobs"]]
    stage = StageProgress([job.epochs for job in jobs])
    try:
        for index, job in enumerate(jobs):
            if job.candidate in finished:
                stage.candidate_done(job.epochs)
                continue  # trained before a restart: its outcome is on storage already
            if rank == 0:
                line = f"[{job.candidate}] candidate {index + 1} of {len(jobs)}, up to {job.epochs} epochs\n"
                sys.__stdout__.write(line)
                sys.__stdout__.flush()
            resume = ckpt if job.candidate == current else None
            finished[job.candidate] = _train_candidate(job, index, config, runtime, finished, resume, fence, stage)
            stage.candidate_done(job.epochs)
            # The resume point between candidates: this one is done, none is in flight.
            metrics = {"candidate_index": index, "candidate_done": 1}
            report(metrics, finished, None, rank, keep_resume=runtime.keep_resume_point, fence=fence)
    finally:
        discard_resume_copy(ckpt)


def _train_candidate(
    job: TrainJob,
    index: int,
    config: dict[str, Any],
    runtime: Runtime,
    finished: dict,
    resume: Path | None,
    fence: store.Fence,
    stage: StageProgress | None = None,
) -> dict[str, Any]:
    """One candidate's Lightning fit; returns its status for progress.json."""
    import lightning.pytorch as pl
    import ray.train
    from lightning.pytorch.callbacks import EarlyStopping

    import models  # noqa: F401  (registers the families)
    from pipelines.training.callbacks import EpochHistory, EpochPrinter, FiniteLoss, NonFiniteLoss, ShardLog
    from pipelines.training.progress import CandidateReport, Keeper
    from pipelines.training.rank_check import state_sha256

    pl.seed_everything(job.seed, workers=True, verbose=False)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    where = store.candidate_uri(config["run_uri"], job.candidate)
    _record_placement(where, rank, runtime, fence)
    device = _device(job)
    # On a GPU, convolutions run fastest with channels-last tensors (NHWC kernels, tensor cores).
    channels_last = job.use_gpu and job.model_spec["family"] == "cnn"
    score, mode = config.get("score") or (job.monitor, job.mode)
    history, shards = EpochHistory(), ShardLog()  # both read module.train_batches
    reporter = CandidateReport(
        job.candidate,
        index,
        config["run_uri"],
        Keeper(score, mode, config["keep"]),
        finished,
        history,
        keep_resume=runtime.keep_resume_point,
        fence=fence,
    )
    trainer = pl.Trainer(
        max_epochs=job.epochs,
        accelerator="gpu" if job.use_gpu else "cpu",
        precision=job.precision,
        devices="auto",
        strategy=runtime.strategy(),
        plugins=runtime.plugins(),
        # Order matters: a non-finite epoch is refused first; history and printing see the epoch before the report.
        callbacks=[
            EarlyStopping(monitor=job.monitor, mode=job.mode, patience=job.patience),
            FiniteLoss(job.candidate, job.optim.get("lr")),
            history,
            shards,
            EpochPrinter(job.candidate, job.epochs, stage),
            reporter,
        ],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
        use_distributed_sampler=False,  # TensorBatches shards by rank itself
        num_sanity_val_steps=0,
    )
    trainer = runtime.prepare(trainer)
    data = data_for(config)  # tensors in memory, or this rank's Ray Data shard streamed (training.data)
    module, train, val = _module_and_batches(job, trainer, device, channels_last, rank, world, runtime.cpus(), data)
    module.train_batches = train  # lets the module reseed shuffling per epoch
    try:
        trainer.fit(module, train_dataloaders=train, val_dataloaders=val, ckpt_path=str(resume) if resume else None)
    except NonFiniteLoss as err:
        if rank == 0:
            fence.check()
            for kept in reporter.keeper.kept:  # a failed candidate leaves no checkpoint
                store.delete_dir(f"{where}/epoch_{kept['epoch']}")
            reporter.keeper.kept = []
            reporter.write_state("failed", str(err))
        return {"status": "failed", "error": str(err)}
    finally:
        train.close()  # a streamed split's next pass, started ahead, that no epoch will take
        val.close()
    # Every rank's weights and shards beside its placement: the driver checks that DDP kept them in step.
    _record_placement(
        where,
        rank,
        runtime,
        fence,
        state_sha256=state_sha256(module),
        split_rows=train.rows,
        data_loading=data.kind,
        shards=shards.epochs,
        updates_per_step=train.group,  # K (training.fused): 1 is one Lightning step per minibatch
    )
    if rank == 0:
        reporter.write_state("finished")
    return {"status": "finished"}


def _device(job: TrainJob):
    """The device this rank trains on: its GPU (Ray Train's choice for the rank), or the CPU."""
    import torch

    if not job.use_gpu:
        return torch.device("cpu")
    import ray.train.torch

    return ray.train.torch.get_device()


def _module_and_batches(
    job: TrainJob, trainer, device, channels_last: bool, rank: int, world: int, cpus: float, data: TrainData
):
    """The candidate's module, this worker's intra-op threads, and its batches: fused when steps are tiny
    (training.fused: K minibatch updates per Lightning step, K decided there, given to both)."""
    import torch

    from models.task_module import TaskModule
    from pipelines.training.fused import fuse, updates_per_step

    module = TaskModule(job.model_spec, job.optim, job.task, job.loss, job.n_classes, job.class_weights)
    per_worker = max(1, job.batch_size // world)
    macs = step_macs(job, module, per_worker)
    if not job.use_gpu:
        _use_reserved_cpus(cpus, small_step=macs < SMALL_STEP_MACS)
    group = updates_per_step(trainer, macs)
    if group > 1:
        module = fuse(module)  # its training batches are groups of `group` minibatches
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    return (module, *data.batches(job, device, channels_last, rank, world, group))
