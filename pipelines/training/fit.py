"""The driver side of training: all candidates of a stage in one Ray Train fit (one worker group).

Ray Train V2 (the default in Ray 2.60) starts a fresh controller and worker group for every
TorchTrainer.fit and cannot reuse one, so a stage hands ALL its candidates to a single fit:
`training.worker.train_worker` trains them one after another in the same worker processes.
With `Scaling.in_process` (`num_workers: auto` on a local CPU-only machine) the fit runs in Ray
Train's local mode: the same training function, in this process, with no worker group at all.
`training.runtime` holds all that differs between the two (`RayWorkerGroup`, `LocalMode`).

Two kinds of checkpoint, for two purposes:

- Ray's reported checkpoints are for resume only (Ray keeps the latest): each holds
  `progress.json` (which candidates are done, which one is in flight) and the in-flight
  candidate's Lightning checkpoint. Re-running with the same RunConfig(name, storage_path)
  resumes there, and so does a worker group that Ray restarts after a lost worker. Local mode
  keeps reported checkpoints in memory only, so there the worker also writes its latest resume
  point under the run's storage (`LocalMode.keep_resume_point`), and a re-run resumes from that.
- Each candidate's best `keep` epochs (by its monitor) are written by rank 0 under the run's
  storage (`training.store`), with its state (status, history, error); the driver collects
  them after the fit.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipelines.training import store
from pipelines.training.data import InMemory, TrainData, data_of
from pipelines.training.job import Scaling, TrainJob
from pipelines.training.runtime import Runtime, runtime_of


@dataclass
class FitOutcome:
    """One candidate's result. status: finished | failed (error says why; no checkpoint) | stopped (cut short)."""

    candidate: str
    status: str
    best_checkpoint_uri: str | None  # a full Lightning checkpoint under the run's storage (local path or s3://)
    best_metrics: dict[str, float]
    history: list[dict[str, float]]
    placement: list[dict[str, Any]] = field(default_factory=list)  # per rank: Ray node id, host, pid
    error: str | None = None
    best_epoch: int | None = None


class CandidateFailed(RuntimeError):
    pass


def fit(
    job: TrainJob,
    scaling: Scaling,
    storage_path: str,
    run_name: str,
    keep: int = 2,
    max_failures: int = 2,
    loading: str = "memory",
) -> FitOutcome:
    """One candidate alone (benchmarks, tests): its best checkpoint by job.monitor."""
    outcome = fit_candidates([job], scaling, storage_path, run_name, keep, max_failures, loading)[job.candidate]
    if outcome.status == "failed":
        raise CandidateFailed(outcome.error)
    return outcome


def fit_candidates(
    jobs: list[TrainJob],
    scaling: Scaling,
    storage_path: str,
    run_name: str,
    keep: int = 2,
    max_failures: int = 2,
    loading: str = "memory",
) -> dict[str, FitOutcome]:
    """Train every job, one after another, in ONE worker group; return each candidate's outcome.

    loading: memory (every worker reads the splits whole) or stream (Ray Data shards: `training.data`)."""
    run = store.run_uri(storage_path, run_name)
    attempt = store.begin_attempt(run)  # from now on, workers of an earlier driver of this run write nothing
    runtime = runtime_of(scaling, run)
    data = data_of(loading, jobs[0].data_dir, jobs[0].seed)
    with runtime.driving():
        trainer = _torch_trainer(
            jobs, scaling, storage_path, run_name, keep, max_failures, runtime, attempt=attempt, data=data
        )
        trainer.fit()
    return {job.candidate: collect(run, job.candidate) for job in jobs}


def collect(run: str, candidate: str, score: str | None = None) -> FitOutcome:
    """What the workers left for one candidate under the run's storage."""
    where = store.candidate_uri(run, candidate)
    state = store.read_json(f"{where}/state.json")
    if state is None:
        raise RuntimeError(f"{candidate}: the training run left no state at {where}/state.json")
    placement = sorted(store.list_json(f"{where}/placement"), key=lambda r: r["rank"])
    kept = state.get("kept") or []
    if state["status"] == "failed" or not kept:
        return FitOutcome(
            candidate, "failed", None, {}, state.get("history", []), placement, state.get("error") or "no checkpoint"
        )
    best = kept[0]  # kept is ordered best first, by the score the worker ranked on
    uri = f"{where}/epoch_{best['epoch']}/checkpoint.ckpt"
    return FitOutcome(
        candidate=candidate,
        status="stopped" if state["status"] == "running" else state["status"],  # e.g. a trial ASHA cut short
        best_checkpoint_uri=uri,
        best_metrics={k: float(v) for k, v in best["metrics"].items()},
        history=state.get("history", []),
        placement=placement,
        best_epoch=int(best["epoch"]),
    )


@contextmanager
def local_checkpoint(uri: str) -> Iterator[Path]:
    """A local path to read the checkpoint at uri; a remote one is downloaded and removed afterwards."""
    if "://" not in uri:
        yield Path(uri)
        return
    with tempfile.TemporaryDirectory(prefix="best-") as tmp:
        yield store.download(uri, Path(tmp) / "checkpoint.ckpt")


def placement_records(storage_path: str, run_name: str, candidate: str) -> list[dict[str, Any]]:
    """Where each rank trains (or trained) a candidate: rank, Ray node id, host, pid."""
    where = store.candidate_uri(store.run_uri(storage_path, run_name), candidate)
    return sorted(store.list_json(f"{where}/placement"), key=lambda r: r["rank"])


def _torch_trainer(
    jobs: list[TrainJob],
    scaling: Scaling,
    storage_path: str,
    run_name: str,
    keep: int,
    max_failures: int,
    runtime: Runtime,
    callbacks: list | None = None,
    score: tuple[str, str] | None = None,
    worker_resources: dict | None = None,
    attempt: str | None = None,
    data: TrainData | None = None,
):
    """One TorchTrainer for all the jobs, its worker where `runtime` runs it (the caller builds and fits it in
    `runtime.driving()`), its data as `data` hands it on (None: in memory)."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig

    from pipelines.training.ray_private import lean_torch_trainer, torch_config
    from pipelines.training.worker import train_worker

    run = store.run_uri(storage_path, run_name)
    data = data or InMemory()
    return lean_torch_trainer()(
        train_worker,
        datasets=data.datasets(),
        train_loop_config={
            "jobs": [asdict(job) for job in jobs],
            "run_uri": run,
            "keep": keep,
            "score": list(score) if score else None,  # None: each candidate's own monitor
            "attempt": attempt,  # store.Fence: None for a search trial, whose folder is its own
            **runtime.loop_config(),  # the worker picks the same runtime from it
            **data.loop_config(),  # and the same data path
        },
        # NCCL between GPUs, gloo between CPU processes: chosen from the config, not left to chance.
        torch_config=torch_config("nccl" if scaling.use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=runtime.num_workers(scaling),
            use_gpu=scaling.use_gpu,
            resources_per_worker=worker_resources
            or {
                "CPU": scaling.cpus_per_worker,
                **({"GPU": scaling.gpus_per_worker} if scaling.use_gpu else {}),
                **({"memory": scaling.memory_per_worker} if scaling.memory_per_worker else {}),
            },
            placement_strategy=scaling.placement_strategy,
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage_path,
            # Ray's checkpoints are for resume only: the latest is all it needs.
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            failure_config=FailureConfig(max_failures=max_failures),
            # Ray Train's INFO/WARNING chatter (every checkpoint, state-API polls
            # without a dashboard) drowns the epoch lines; its log files keep it all.
            logging_config=LoggingConfig(log_level="ERROR"),
            callbacks=callbacks or [],
        ),
    )


# What tells a re-run where to resume: deleted first, so a run cut short while being removed starts afresh
# instead of resuming into checkpoints that are already gone.
RESUME_MARKERS = ("resume/progress.json", "checkpoint_manager_snapshot.json")


def remove_run(storage_path: str, run_name: str) -> None:
    """Drop a finished run's checkpoints (its best ones were exported already)."""
    run = store.run_uri(storage_path, run_name)
    for marker in RESUME_MARKERS:
        store.delete_file(f"{run}/{marker}")
    store.delete_dir(run)
