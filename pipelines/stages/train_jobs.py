"""The train stage's jobs: each candidate checked against the prepared data (task, loss, monitor, search)
and described as a plain TrainJob for the workers. Split from stages/train.py, which runs them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines import paths
from pipelines.config import Candidate, ComputeParams, DatasetParams
from pipelines.errors import PipelineInputError
from pipelines.paths import DatasetPaths

if TYPE_CHECKING:
    from pipelines.training.job import TrainJob


def data_fingerprint(prepared_dir: Path) -> str:
    """The prepared folder's files (the splits' shards too), by name and content, read a MiB at a time."""
    digest = hashlib.sha256()
    for f in sorted(p for p in prepared_dir.rglob("*") if p.is_file()):
        digest.update(f.relative_to(prepared_dir).as_posix().encode())
        with f.open("rb") as handle:
            while block := handle.read(2**20):
                digest.update(block)
    return digest.hexdigest()


def model_spec(cand: Candidate, meta: dict, out_features: int) -> dict:
    """Plain keyword arguments for models.create_model: the candidate's family knows its builder's arguments."""
    return cand.model_spec(meta, out_features)


def train_class_counts(dataset: str, meta: dict) -> list[int]:
    """Rows of each class in the training split: prepare's count, or counted here for a meta written before it."""
    counts = meta.get("class_counts_train")
    if counts is not None:
        return [int(c) for c in counts]
    import numpy as np

    from pipelines.handoffs.splits import iter_targets

    counts = np.zeros(len(meta["classes"]), np.int64)
    for y in iter_targets(paths.absolute(DatasetPaths(dataset).split_dir("train"))):
        counts += np.bincount(y.reshape(-1).astype(np.int64), minlength=len(counts))
    return counts.tolist()


def class_weighting(
    dataset: str, name: str, cand: Candidate, params: DatasetParams, meta: dict
) -> tuple[str, list[float] | None]:
    """(setting, weights or None) of a candidate's loss: its own class_weights, else the dataset's."""
    from models.class_weights import weights_for
    from models.task_kinds import get_task

    own = cand.class_weights is not None
    setting = cand.class_weights if own else params.train.class_weights
    if setting == "none":
        return setting, None
    task = meta["task"]
    if not get_task(task).has_classes:
        key = f"datasets.{dataset}.train" + (f".candidates.{name}" if own else "")
        raise PipelineInputError(f"{key}.class_weights: a {task} task has no classes to weigh; use none")
    return setting, weights_for(setting, train_class_counts(dataset, meta))


def weights_record(dataset: str, job: TrainJob, meta: dict) -> dict | None:
    """What the train summary, the checkpoint and the model card say about a job's class weights (None: no classes)."""
    from models.task_kinds import get_task

    classes = meta.get("classes")
    if not classes or not get_task(job.task).has_classes:
        return None
    record = {"setting": job.class_weighting, "train_counts": dict(zip(classes, train_class_counts(dataset, meta)))}
    if job.class_weights is not None:
        record["weights"] = dict(zip(classes, job.class_weights))
    return record


def make_job(dataset: str, name: str, cand: Candidate, params: DatasetParams, compute: ComputeParams, meta: dict):
    """Check the candidate against the data (task, loss, monitor) and describe it as a TrainJob."""
    import models  # noqa: F401
    from models.catalogue import supported_tasks
    from models.task_kinds import get_task
    from models.tasks import output_size, resolve_loss
    from pipelines.training.job import TrainJob

    key = f"datasets.{dataset}.train"
    task, classes = meta["task"], meta.get("classes")
    n_classes = len(classes) if classes else meta.get("vocab_size")
    if task not in supported_tasks(cand.family):
        raise PipelineInputError(f"{key}.candidates.{name}.family: {cand.family} cannot do a {task} task")
    try:
        loss = resolve_loss(task, cand.loss, n_classes)
    except ValueError as err:
        raise PipelineInputError(f"{key}.candidates.{name}.loss: {err}") from None
    monitor = params.train.early_stopping.monitor
    known = get_task(task).logged_metrics()
    if monitor not in known:
        raise PipelineInputError(
            f"{key}.early_stopping.monitor: {monitor!r} is not logged for a {task} task; use one of {sorted(known)}"
        )
    optim = {
        k: getattr(cand, k)
        for k in ("optimizer", "lr", "weight_decay", "momentum", "lr_schedule", "lr_step_size", "lr_gamma")
    }
    weighting, weights = class_weighting(dataset, name, cand, params, meta)
    return TrainJob(
        candidate=f"{dataset}/{name}",
        model_spec=model_spec(cand, meta, output_size(task, loss, n_classes, meta.get("horizon") or 1)),
        optim=optim,
        task=task,
        loss=loss,
        n_classes=n_classes,
        data_dir=str(paths.absolute(DatasetPaths(dataset).prepared_dir)),
        seed=params.train.seed,
        epochs=params.train.epochs,
        batch_size=params.train.batch_size,
        monitor=monitor,
        mode=params.train.early_stopping.mode,
        patience=params.train.early_stopping.patience,
        use_gpu=compute.use_gpu,
        precision=compute.precision,
        class_weights=weights,
        class_weighting=weighting,
    )


def searched_job(
    dataset: str,
    name: str,
    cand: Candidate,
    params: DatasetParams,
    compute: ComputeParams,
    meta: dict,
    data_dir: str,
    knobs: dict,
):
    """The job of candidate `name` with some knobs replaced (one search trial).

    Runs in Ray Tune's trial actors, whose working directory is the trial's: data_dir is resolved by the caller.
    """
    tried = type(cand).model_validate({**cand.model_dump(), **knobs})
    job = make_job(dataset, name, tried, params, compute, meta)
    job.data_dir = data_dir
    return job


def search_spec(params: DatasetParams):
    from pipelines.training.search import SearchSpec

    s = params.train.search
    metric, mode = params.train.searched_metric()
    return SearchSpec(
        space={k: dim.model_dump(exclude_none=True) for k, dim in s.space.items()},
        num_samples=s.num_samples,
        max_concurrent_trials=s.max_concurrent_trials,
        grace_period=s.grace_period,
        reduction_factor=s.reduction_factor,
        metric=metric,
        mode=mode,
        seed=params.train.seed,
    )


def check_search(dataset: str, params: DatasetParams, compute: ComputeParams, meta: dict, jobs: dict):
    """The search of this dataset (None when off), checked before anything starts; returns (search, spec)."""
    from models.task_kinds import get_task

    search = params.train.search if params.train.search is not None and params.train.search.enabled else None
    if search is None:
        return None, None
    spec = search_spec(params)
    cand = params.train.candidates[search.candidate]
    for dim_key, dim in search.space.items():  # every edge of the space makes a job (task, loss, monitor)
        for value in dim.values if dim.type == "choice" else []:
            searched_job(dataset, search.candidate, cand, params, compute, meta, "", {dim_key: value})
    known = get_task(meta["task"]).logged_metrics() | {jobs[search.candidate].monitor}
    if spec.metric not in known:
        raise PipelineInputError(
            f"datasets.{dataset}.train.search.metric: {spec.metric!r} is not logged for a {meta['task']} task; "
            f"use one of {sorted(known)}"
        )
    return search, spec
