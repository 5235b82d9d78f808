"""A hyperparameter search: Ray Tune + ASHA over one candidate's knobs.

Tune's trials are function trainables ("drivers", ~0 CPU each) that each build and fit their
own TorchTrainer over one job; the inner run's TuneReportCallback forwards every epoch's
report to Tune, where ASHA stops the weak trials early. (Train V2: no Trainer inside a Tuner.)
The trial's worker keeps its best epochs by the search metric; the best trial's are exported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.training.data import data_of
from pipelines.training.fit import FitOutcome, _torch_trainer, collect
from pipelines.training.job import Scaling, TrainJob
from pipelines.training.runtime import runtime_of
from pipelines.training.store import run_uri


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
    loading: str = "memory",
) -> None:
    """One Tune trial: build this trial's job from its knobs and fit it with its own TorchTrainer, its data read as
    the stage's (`loading`: memory, or streamed through Ray Data datasets opened by this trial)."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    job = make_job(_plain(config["knobs"]))
    trial_run = f"{run_name}-{tune.get_context().get_trial_id()}"
    # The trial's own placement group (Tune's, released when the trial ends) holds the workers' CPUs;
    # the workers ask for none. When ASHA stops a trial, Tune kills this actor and with it the Train
    # controller; Train's PlacementGroupCleaner needs the State API (a full dashboard) to notice, so
    # without one the worker group's placement group outlives the trial: it must hold no CPU.
    workers = {"CPU": 0, "memory": 32 * 2**20, **({"GPU": scaling.gpus_per_worker} if scaling.use_gpu else {})}
    runtime = runtime_of(scaling, run_uri(storage_path, trial_run))
    with runtime.driving():
        trainer = _torch_trainer(
            [job],
            scaling,
            storage_path,
            trial_run,
            keep,
            max_failures,
            runtime,
            callbacks=[TuneReportCallback()],
            score=score,
            worker_resources=workers,
            data=data_of(loading, job.data_dir, job.seed),
        )
        trainer.fit()


def search(
    make_job: Callable[[dict], TrainJob],
    spec: SearchSpec,
    scaling: Scaling,
    storage_path: str,
    run_name: str,
    keep: int = 2,
    max_failures: int = 2,
    loading: str = "memory",
) -> SearchOutcome:
    """Ray Tune + ASHA over `spec.space`; each trial is a distributed fit of make_job(knobs), its data in memory or
    streamed (`loading`, as the stage's other candidates).

    Returns the best trial (by spec.metric over all its epochs) with its best checkpoint.
    """
    grid = _tuner(make_job, spec, scaling, storage_path, run_name, keep, max_failures, loading).fit()
    trials, best_row, best_result = _read_trials(grid, spec)
    if best_row is None:
        raise RuntimeError(f"{run_name}: no search trial reported {spec.metric!r}")

    result, df, trial_id = best_result
    job = make_job(_plain(result.config["knobs"]))
    # The trial's worker kept its best epochs by the search metric (score=...): the best row's epoch is first.
    best = collect(run_uri(storage_path, f"{run_name}-{trial_id}"), job.candidate)
    best.best_metrics = {
        k: float(v) for k, v in best_row.items() if k.startswith(("val/", "train/")) and isinstance(v, (int, float))
    }
    return SearchOutcome(
        best_knobs=_plain(result.config["knobs"]),
        best_trial_id=trial_id,
        best=best,
        trials=trials,
        run_names=[f"{run_name}-tune"] + [f"{run_name}-{t.trial_id}" for t in trials],
    )


def _tuner(
    make_job: Callable[[dict], TrainJob],
    spec: SearchSpec,
    scaling: Scaling,
    storage_path: str,
    run_name: str,
    keep: int,
    max_failures: int,
    loading: str,
):
    """The Tuner: ASHA over the space, each trial a driver that runs one distributed fit."""
    from ray import tune
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
        loading=loading,
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
    return tuner


def _read_trials(grid, spec: SearchSpec) -> tuple[list[TrialRecord], Any, Any]:
    """Every trial's record, and the best epoch row over all trials with (result, frame, trial id)."""
    trials, best_row, best_result = [], None, None
    sign = 1.0 if spec.mode == "min" else -1.0
    for result in grid:
        df = result.metrics_dataframe
        trial_id = result.metrics.get("trial_id") if result.metrics else None
        trial_id = trial_id or Path(result.path).name
        if df is None or df.empty or spec.metric not in df or df[spec.metric].isna().all():
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
        # Only epoch reports carry the metric (a worker also reports when a candidate is done).
        df = df[df[spec.metric].notna()].sort_values("training_iteration")
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
    return trials, best_row, best_result
