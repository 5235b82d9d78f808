"""Everything Ray: starting or joining a cluster, running one distributed fit, and a hyperparameter search.

Ray Train V2 (the default in Ray 2.60): a TorchTrainer runs `train_worker` in
N worker processes; inside each, a Lightning Trainer with RayDDPStrategy does
the training and RayTrainReportCallback reports metrics + a checkpoint every
epoch, of which Ray keeps the top-k. Re-running with the same RunConfig(name,
storage_path) resumes from the latest checkpoint (`ray.train.get_checkpoint()`).

A search (`search`) is a Ray Tune run whose trials are function trainables
("drivers", ~0 CPU each) that each build and fit their own TorchTrainer; the
inner run's TuneReportCallback forwards every epoch's report to Tune, where
ASHA stops the weak trials early. (Train V2: no Trainer inside a Tuner.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# A worker's report queue holds one result, which the controller collects at its health
# check (every 2 s by default): with epochs shorter than that, the next report blocks until
# the poll. At 0.1 s it never waits; polling that often cost no measurable throughput, and a
# slower poll only adds up to one interval of teardown (BENCHMARKS.md).
RAY_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1", "RAY_DEDUP_LOGS": "1"}
# Only on a Ray instance we start ourselves (one machine): the spot-preemption watcher and
# the Prometheus metrics callbacks are cluster observability, and each fit would otherwise
# start a watcher actor (one more process importing Ray Train) and export metrics nobody
# scrapes (no dashboard here). On a cluster joined through RAY_ADDRESS, Ray's defaults stand.
LOCAL_RAY_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_TRAIN_METRICS_ENABLED": "0"}


@dataclass
class TrainJob:
    """Everything a worker needs, as plain data (it crosses a process boundary)."""

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

    def fingerprint(self, data_hash: str) -> str:
        """Same job on the same data -> same Ray run name -> a re-run resumes it."""
        blob = json.dumps({**asdict(self), "data": data_hash}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:10]


@dataclass
class Scaling:
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 1.0
    placement_strategy: str = "PACK"


@dataclass
class FitOutcome:
    best_checkpoint_dir: Path  # holds checkpoint.ckpt (a full Lightning checkpoint)
    best_metrics: dict[str, float]
    history: list[dict[str, float]]
    placement: list[dict[str, Any]] = field(
        default_factory=list
    )  # per rank: Ray node id, host, pid (the last worker group)


def ensure_ray(address: str | None = None) -> float:
    """Start a local Ray instance, or join RAY_ADDRESS. Returns the seconds it took."""
    import ray

    if ray.is_initialized():
        return 0.0
    address = address or os.environ.get("RAY_ADDRESS")
    wanted = RAY_ENV if address else {**RAY_ENV, **LOCAL_RAY_ENV}
    os.environ.update({k: os.environ.get(k, v) for k, v in wanted.items()})  # the user's own settings win
    started = time.perf_counter()
    ray.init(
        address=address,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=True,
        runtime_env={
            "env_vars": {k: os.environ[k] for k in wanted},
            "worker_process_setup_hook": "pipelines.training.ray_logging.quiet",
        },
    )
    return time.perf_counter() - started


def shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def fit(
    job: TrainJob, scaling: Scaling, storage_path: str, run_name: str, keep: int = 2, max_failures: int = 2
) -> FitOutcome:
    """Run one distributed training; return its best checkpoint (by job.monitor)."""
    result = _torch_trainer(job, scaling, storage_path, run_name, keep, max_failures).fit()
    best = result.get_best_checkpoint(job.monitor, job.mode)
    if best is None:
        raise RuntimeError(f"{job.candidate}: Ray Train finished without a checkpoint")
    best_metrics = next(m for c, m in result.best_checkpoints if c.path == best.path)
    history = _history_from_checkpoint(result.checkpoint)
    return FitOutcome(
        best_checkpoint_dir=_local_dir(best),
        best_metrics={k: float(v) for k, v in best_metrics.items() if isinstance(v, (int, float))},
        history=history,
        placement=_read_placement(_placement_uri(storage_path, run_name)),
    )


PLACEMENT_KEY = "_placement_uri"


def _placement_uri(storage_path: str, run_name: str) -> str:
    return f"{storage_path.rstrip('/')}/{run_name}/placement"


def _record_placement(uri: str, rank: int) -> None:
    """Each worker notes where it runs, on the run's (shared) storage: proof of where training happened."""
    import socket

    import pyarrow.fs
    import ray

    fs, root = pyarrow.fs.FileSystem.from_uri(uri)
    fs.create_dir(root, recursive=True)
    record = {
        "rank": rank,
        "node_id": ray.get_runtime_context().get_node_id(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    with fs.open_output_stream(f"{root}/rank{rank}.json") as out:
        out.write(json.dumps(record).encode())


def _read_placement(uri: str) -> list[dict[str, Any]]:
    import pyarrow.fs

    fs, root = pyarrow.fs.FileSystem.from_uri(uri)
    infos = [
        i for i in fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True)) if i.path.endswith(".json")
    ]
    records = []
    for info in infos:
        with fs.open_input_stream(info.path) as f:
            records.append(json.loads(f.read()))
    return sorted(records, key=lambda r: r["rank"])


def _torch_trainer(
    job: TrainJob,
    scaling: Scaling,
    storage_path: str,
    run_name: str,
    keep: int,
    max_failures: int,
    callbacks: list | None = None,
    score: tuple[str, str] | None = None,
    worker_resources: dict | None = None,
):
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    score_attr, score_order = score or (job.monitor, job.mode)
    return TorchTrainer(
        train_worker,
        train_loop_config={**asdict(job), PLACEMENT_KEY: _placement_uri(storage_path, run_name)},
        # NCCL between GPUs, gloo between CPU processes: chosen from the config, not left to chance.
        torch_config=TorchConfig(backend="nccl" if scaling.use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=scaling.num_workers,
            use_gpu=scaling.use_gpu,
            resources_per_worker=worker_resources
            or {"CPU": scaling.cpus_per_worker, **({"GPU": scaling.gpus_per_worker} if scaling.use_gpu else {})},
            placement_strategy=scaling.placement_strategy,
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage_path,
            checkpoint_config=CheckpointConfig(
                num_to_keep=keep, checkpoint_score_attribute=score_attr, checkpoint_score_order=score_order
            ),
            failure_config=FailureConfig(max_failures=max_failures),
            # Ray Train's INFO/WARNING chatter (every checkpoint, state-API polls
            # without a dashboard) drowns the epoch lines; its log files keep it all.
            logging_config=LoggingConfig(log_level="ERROR"),
            callbacks=callbacks or [],
        ),
    )


# ------------------------------------------------------------------ search


@dataclass
class SearchSpec:
    """A search as plain data: knob -> {type: loguniform|uniform|randint, low, high} or {type: choice, values}."""

    space: dict[str, dict[str, Any]]
    num_samples: int
    max_concurrent_trials: int
    grace_period: int
    reduction_factor: int
    metric: str
    mode: str
    seed: int = 0


@dataclass
class TrialRecord:
    trial_id: str
    knobs: dict[str, Any]
    epochs_run: int
    best_metric: float | None  # the search metric's best value over the trial's epochs
    started: float  # wall-clock seconds (epoch time); comparable across trials
    ended: float
    error: str | None = None


@dataclass
class SearchOutcome:
    best_knobs: dict[str, Any]
    best_trial_id: str
    best: FitOutcome  # the best trial's best checkpoint, as `fit` returns it
    trials: list[TrialRecord]
    run_names: list[str]  # the Tune experiment and every trial's Ray Train run (for remove_run)


def _tune_space(space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from ray import tune

    out = {}
    for key, dim in space.items():
        kind = dim["type"]
        if kind == "loguniform":
            out[key] = tune.loguniform(dim["low"], dim["high"])
        elif kind == "uniform":
            out[key] = tune.uniform(dim["low"], dim["high"])
        elif kind == "randint":
            out[key] = tune.randint(int(dim["low"]), int(dim["high"]) + 1)  # both ends included
        elif kind == "choice":
            out[key] = tune.choice(list(dim["values"]))
        else:
            raise ValueError(f"{key}: unknown search type {kind!r}")
    return out


def _plain(knobs: dict[str, Any]) -> dict[str, Any]:
    """numpy scalars (randint samples) -> Python numbers: knobs go through pydantic and into JSON."""
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in knobs.items()}


def _trial_driver(
    config: dict[str, Any],
    make_job: Callable[[dict], TrainJob],
    scaling: Scaling,
    storage_path: str,
    run_name: str,
    keep: int,
    max_failures: int,
    score: tuple[str, str],
) -> None:
    """One Tune trial: build this trial's job from its knobs and fit it with its own TorchTrainer."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    job = make_job(_plain(config["knobs"]))
    trial_run = f"{run_name}-{tune.get_context().get_trial_id()}"
    # The trial's own placement group (Tune's, released when the trial ends) holds the workers' CPUs;
    # the workers ask for none. When ASHA stops a trial, Tune kills this actor and with it the Train
    # controller; Train's PlacementGroupCleaner needs the State API (a full dashboard) to notice, so
    # without one the worker group's placement group outlives the trial: it must hold no CPU.
    workers = {"CPU": 0, "memory": 32 * 2**20, **({"GPU": scaling.gpus_per_worker} if scaling.use_gpu else {})}
    _torch_trainer(
        job,
        scaling,
        storage_path,
        trial_run,
        keep,
        max_failures,
        callbacks=[TuneReportCallback()],
        score=score,
        worker_resources=workers,
    ).fit()


def _checkpoint_at(path: str, storage_path: str):
    from ray.train import Checkpoint

    if "://" in storage_path:
        import pyarrow.fs

        fs, _ = pyarrow.fs.FileSystem.from_uri(storage_path)
        return Checkpoint(path=path, filesystem=fs)
    return Checkpoint(path=path)


def _exists(checkpoint) -> bool:
    try:
        from pyarrow.fs import FileType

        return checkpoint.filesystem.get_file_info(checkpoint.path).type != FileType.NotFound
    except Exception:
        return False


def search(
    make_job: Callable[[dict], TrainJob],
    spec: SearchSpec,
    scaling: Scaling,
    storage_path: str,
    run_name: str,
    keep: int = 2,
    max_failures: int = 2,
) -> SearchOutcome:
    """Ray Tune + ASHA over `spec.space`; each trial is a distributed fit of make_job(knobs).

    Returns the best trial (by spec.metric over all its epochs) with its best checkpoint.
    """
    from ray import tune
    from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    max_epochs = make_job({}).epochs
    driver = tune.with_parameters(
        _trial_driver,
        make_job=make_job,
        scaling=scaling,
        storage_path=storage_path,
        run_name=run_name,
        keep=keep,
        max_failures=max_failures,
        score=(spec.metric, spec.mode),
    )
    tune_name = f"{run_name}-tune"
    tuner = tune.Tuner(
        # The driver only waits on its TorchTrainer; its reservation is its workers' CPUs (see _trial_driver).
        tune.with_resources(driver, {"cpu": scaling.num_workers * scaling.cpus_per_worker, "memory": 64 * 2**20}),
        param_space={"knobs": _tune_space(spec.space)},
        tune_config=tune.TuneConfig(
            metric=spec.metric,
            mode=spec.mode,
            num_samples=spec.num_samples,
            max_concurrent_trials=spec.max_concurrent_trials,
            search_alg=BasicVariantGenerator(
                max_concurrent=spec.max_concurrent_trials, random_state=spec.seed
            ),  # seed -> same configs
            scheduler=ASHAScheduler(
                time_attr="training_iteration",
                max_t=max_epochs,
                grace_period=spec.grace_period,
                reduction_factor=spec.reduction_factor,
            ),
        ),
        run_config=tune.RunConfig(name=tune_name, storage_path=storage_path, verbose=0),
    )
    grid = tuner.fit()

    trials, best_row, best_result = [], None, None
    sign = 1.0 if spec.mode == "min" else -1.0
    for result in grid:
        df = result.metrics_dataframe
        trial_id = result.metrics.get("trial_id") if result.metrics else None
        trial_id = trial_id or Path(result.path).name
        if df is None or df.empty or spec.metric not in df:
            trials.append(
                TrialRecord(
                    trial_id,
                    _plain(result.config.get("knobs", {})),
                    0,
                    None,
                    0.0,
                    0.0,
                    error=str(result.error) if result.error else "no reports",
                )
            )
            continue
        df = df.sort_values("training_iteration")
        scores = df[spec.metric].astype(float)
        i = int((sign * scores).values.argmin())
        started = float(df["timestamp"].iloc[0] - df["time_this_iter_s"].iloc[0])
        trials.append(
            TrialRecord(
                trial_id,
                _plain(result.config["knobs"]),
                int(df["training_iteration"].max()),
                float(scores.iloc[i]),
                started,
                float(df["timestamp"].iloc[-1]),
                error=str(result.error) if result.error else None,
            )
        )
        if best_row is None or sign * scores.iloc[i] < sign * best_row[spec.metric]:
            best_row, best_result = df.iloc[i], (result, df, trial_id)
    if best_row is None:
        raise RuntimeError(f"{run_name}: no search trial reported {spec.metric!r}")

    result, df, trial_id = best_result
    best_ckpt = _checkpoint_at(best_row[CHECKPOINT_PATH_KEY], storage_path)
    # The latest surviving checkpoint holds the whole learning curve (EpochHistory).
    history = []
    for path in reversed(df[CHECKPOINT_PATH_KEY].dropna().tolist()):
        latest = _checkpoint_at(path, storage_path)
        if _exists(latest):
            history = _history_from_checkpoint(latest)
            break
    metrics = {
        k: float(v) for k, v in best_row.items() if k.startswith(("val/", "train/")) and isinstance(v, (int, float))
    }
    return SearchOutcome(
        best_knobs=_plain(result.config["knobs"]),
        best_trial_id=trial_id,
        best=FitOutcome(
            best_checkpoint_dir=_local_dir(best_ckpt),
            best_metrics=metrics,
            history=history,
            placement=_read_placement(_placement_uri(storage_path, f"{run_name}-{trial_id}")),
        ),
        trials=trials,
        run_names=[tune_name] + [f"{run_name}-{t.trial_id}" for t in trials],
    )


def remove_run(storage_path: str, run_name: str) -> None:
    """Drop a finished run's Ray checkpoints (its best one was exported already)."""
    if "://" in storage_path:
        import pyarrow.fs

        fs, root = pyarrow.fs.FileSystem.from_uri(storage_path)
        try:
            fs.delete_dir(f"{root.rstrip('/')}/{run_name}")
        except (FileNotFoundError, OSError):
            pass
    else:
        shutil.rmtree(Path(storage_path) / run_name, ignore_errors=True)


def _local_dir(checkpoint) -> Path:
    path = Path(checkpoint.path)
    if path.exists():
        return path
    return Path(checkpoint.to_directory())  # remote storage (S3): download once


def _history_from_checkpoint(checkpoint) -> list[dict[str, float]]:
    """The latest checkpoint carries the whole per-epoch history (EpochHistory's state)."""
    import torch

    if checkpoint is None:
        return []
    ckpt = torch.load(_local_dir(checkpoint) / "checkpoint.ckpt", map_location="cpu", weights_only=True)
    for key, state in ckpt.get("callbacks", {}).items():
        if key.startswith("EpochHistory"):
            return list(state["rows"])
    return []


# ----------------------------------------------------------------- worker side


def _ddp_strategy(ray_ddp_strategy: type):
    """Ray's DDP strategy, minus the DDP wrapper when the run has a single worker.

    With one worker there is nothing to all-reduce, yet DistributedDataParallel still
    copies every gradient into its buckets and runs a (one-rank) all-reduce each step:
    ~10 % of a small model's step on CPU (BENCHMARKS.md). With several workers,
    gradients are DDP's bucket views (one copy fewer per step, less memory).
    """

    class RayTrainStrategy(ray_ddp_strategy):
        def configure_ddp(self) -> None:
            if self.world_size > 1:
                super().configure_ddp()

    return RayTrainStrategy(gradient_as_bucket_view=True)


def train_worker(config: dict[str, Any]) -> None:
    """Runs inside each Ray Train worker process."""
    import numpy as np
    import pytorch_lightning as pl
    import ray.train
    import torch
    from pytorch_lightning.callbacks import EarlyStopping
    from ray.train.lightning import RayDDPStrategy, RayLightningEnvironment, RayTrainReportCallback, prepare_trainer

    import models  # noqa: F401  (registers the families)
    from models.task_module import TaskModule
    from pipelines.training.batches import TensorBatches
    from pipelines.training.callbacks import EpochHistory, EpochPrinter
    from pipelines.training.ray_logging import quiet

    quiet()  # Ray Train configures its loggers after the setup hook ran
    placement_uri = config.pop(PLACEMENT_KEY, None)
    job = TrainJob(**config)
    pl.seed_everything(job.seed, workers=True, verbose=False)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    # One intra-op thread per CPU this worker reserved (not whatever OMP_NUM_THREADS the
    # environment happened to carry): two 1-CPU workers on two cores must not oversubscribe.
    assigned_cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 0)
    if assigned_cpus >= 1:
        torch.set_num_threads(int(assigned_cpus))
    if placement_uri:
        _record_placement(placement_uri, rank)
    device = ray.train.torch.get_device() if job.use_gpu else torch.device("cpu")

    # On a GPU, convolutions run fastest with channels-last tensors (NHWC kernels, tensor cores).
    channels_last = job.use_gpu and job.model_spec["family"] == "cnn"

    def split(name: str) -> tuple[torch.Tensor, torch.Tensor]:
        with np.load(Path(job.data_dir) / f"{name}.npz") as arrays:
            # Resident on the training device; batches are index slices.
            x = torch.from_numpy(arrays["x"]).to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return x, torch.from_numpy(arrays["y"]).to(device)

    per_worker = max(1, job.batch_size // world)
    train = TensorBatches(*split("train"), per_worker, shuffle=True, seed=job.seed, rank=rank, world=world)
    val = TensorBatches(*split("val"), max(per_worker, 1024), shuffle=False, rank=rank, world=world)

    module = TaskModule(job.model_spec, job.optim, job.task, job.loss, job.n_classes)
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    trainer = pl.Trainer(
        max_epochs=job.epochs,
        accelerator="gpu" if job.use_gpu else "cpu",
        precision=job.precision,
        devices="auto",
        strategy=_ddp_strategy(RayDDPStrategy),
        plugins=[RayLightningEnvironment()],
        # Order matters: history and printing see the epoch before the report.
        callbacks=[
            EarlyStopping(monitor=job.monitor, mode=job.mode, patience=job.patience),
            EpochHistory(),
            EpochPrinter(job.candidate, job.epochs),
            RayTrainReportCallback(),
        ],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
        use_distributed_sampler=False,  # TensorBatches shards by rank itself
        num_sanity_val_steps=0,
    )
    trainer = prepare_trainer(trainer)
    module.train_batches = train  # lets the module reseed shuffling per epoch

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        trainer.fit(module, train_dataloaders=train, val_dataloaders=val)
    else:
        with checkpoint.as_directory() as ckpt_dir:
            trainer.fit(
                module,
                train_dataloaders=train,
                val_dataloaders=val,
                ckpt_path=str(Path(ckpt_dir) / RayTrainReportCallback.CHECKPOINT_NAME),
            )
