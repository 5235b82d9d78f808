"""Stage 3, train: each candidate of a dataset through Ray Train; export its best checkpoint.

The candidates become jobs in stages/train_jobs.py (checked against the data first); this module runs them.

python -m pipelines.stages.train <dataset>
"""

from __future__ import annotations

import csv
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path

from pipelines import paths
from pipelines.atomic import atomic_dir, read_json, write_json
from pipelines.config import ComputeParams, DatasetParams
from pipelines.errors import PipelineInputError, cli_entry
from pipelines.handoffs import CandidateInfo, CandidateSummary, TrainSummary
from pipelines.paths import DatasetPaths
from pipelines.stages.cli import pipeline_and_dataset
from pipelines.stages.train_jobs import check_search, data_fingerprint, make_job, searched_job, weights_record


def write_history(path: Path, rows: list[dict[str, float]]) -> None:
    columns = sorted({k for row in rows for k in row}, key=lambda k: (k != "epoch", k))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def run_search(dataset, name, params, compute, meta, job, spec, scaling, storage, data_hash, loading):
    """The searched candidate: its own Tune run; returns (outcome, the best trial's job, searched info, run names)."""
    from pipelines.training import search as tune_search

    run_name = f"{dataset}-{name}-search-{job.fingerprint(data_hash + repr(asdict(spec)))}"
    print(
        f"train[{dataset}]: {name}: searching {', '.join(spec.space)} with Ray Tune + ASHA "
        f"({spec.num_samples} trials, {spec.max_concurrent_trials} at once, by {spec.metric})",
        flush=True,
    )
    make = partial(searched_job, dataset, name, params.train.candidates[name], params, compute, meta, job.data_dir)
    found = tune_search.search(
        make, spec, scaling, storage, run_name, keep=compute.checkpoints_to_keep, loading=loading
    )
    searched = {
        "knobs": found.best_knobs,
        "trial": found.best_trial_id,
        "metric": spec.metric,
        "mode": spec.mode,
        "trials": [asdict(t) for t in found.trials],
    }
    return found.best, make(found.best_knobs), searched, found.run_names


def export_candidate(out: Path, where: DatasetPaths, name: str, job, outcome, meta: dict, searched: dict | None):
    """The candidate's best weights as a model checkpoint, and its learning curve."""
    from models.checkpoint import net_state_from_lightning, save_checkpoint
    from pipelines.training.fit import local_checkpoint

    with local_checkpoint(outcome.best_checkpoint_uri) as ckpt:
        state, extra = net_state_from_lightning(ckpt)
    cand_dir = out / name
    cand_dir.mkdir()
    info = CandidateInfo(
        candidate=name,
        dataset=where.name,
        model_spec=job.model_spec,
        optim=job.optim,
        task=job.task,
        loss=job.loss,
        n_classes=job.n_classes,
        classes=meta.get("classes"),
        best_epoch=extra["epoch"],
        val_metrics=outcome.best_metrics,
        data_meta=meta,
        searched=searched["knobs"] if searched is not None else None,
        class_weights=weights_record(where.name, job, meta),
    ).dump()
    save_checkpoint(cand_dir / where.candidate_checkpoint(name).name, state, info)
    write_history(cand_dir / where.candidate_history(name).name, outcome.history)
    return extra["epoch"]


def rank_check(dataset: str, name: str, placement: list[dict], contents_digest: int | None = None) -> dict | None:
    """Did every rank end with the same weights, trained on disjoint shards of the split? Said aloud when not."""
    from pipelines.training import rank_check as check

    verdict = check.check(placement, contents_digest)
    if verdict is not None and not (verdict["identical_weights"] and verdict["disjoint_shards"]):
        print(
            f"train[{dataset}]: WARNING: {name}: the {verdict['ranks']} ranks did not stay in step "
            f"(identical weights: {verdict['identical_weights']}, disjoint shards: {verdict['disjoint_shards']})",
            flush=True,
        )
    return verdict


def _contents_digest(dataset: str) -> int:
    """The training split's rows, digested as a streaming worker digests the rows it iterates."""
    import torch

    from pipelines.handoffs.splits import iter_split
    from pipelines.training.streamed import rows_digest

    folder = paths.absolute(DatasetPaths(dataset).split_dir("train"))
    return sum(rows_digest(torch.from_numpy(x)) for x, _ in iter_split(folder)) % 2**64


def train(dataset: str, params: DatasetParams, compute: ComputeParams) -> dict:
    from pipelines.training import cluster, plan
    from pipelines.training.fit import fit_candidates, remove_run
    from pipelines.training.job import group_fingerprint

    where = DatasetPaths(dataset)
    meta = read_json(where.prepared_meta)
    jobs = {
        name: make_job(dataset, name, cand, params, compute, meta) for name, cand in params.train.candidates.items()
    }  # fail fast
    search, spec = check_search(dataset, params, compute, meta, jobs)
    data_hash = data_fingerprint(where.prepared_dir)
    storage = compute.storage_path if "://" in compute.storage_path else str(paths.absolute(compute.storage_path))
    summary: dict = {"dataset": dataset, "candidates": {}, "data_fingerprint": data_hash}
    in_process = plan.in_process(compute)

    def join_ray() -> None:
        summary["ray_start_s"] = cluster.ensure_ray()
        summary["ray"] = cluster.session()  # which Ray instance served this stage (one per flow run)

    ray_first = plan.needs_ray(compute, searching=search is not None)
    if ray_first:  # `num_workers: auto` on a cluster asks the joined instance what it has
        join_ray()
    scaling = plan.scaling(compute, in_process)
    loading, why = plan.data_loading(params.train.data_loading, paths.absolute(where.prepared_dir), scaling)
    print(f"train[{dataset}]: data {'streamed through Ray Data' if loading == 'stream' else 'in memory'} ({why})")
    if loading == "stream" and not ray_first:  # local mode streaming: Ray Data's read tasks need an instance
        join_ray()
    summary["scaling"] = asdict(scaling)
    summary["data_loading"] = loading
    grouped = [job for name, job in jobs.items() if search is None or name != search.candidate]
    outcomes, finished_runs, searched = {}, [], {}
    started = time.perf_counter()
    if grouped:
        # Local mode and a Ray worker group keep their resume points apart: a re-run resumes only its own kind.
        run_name = f"{dataset}-{group_fingerprint(grouped, data_hash)}" + ("-local" if in_process else "")
        names = ", ".join(job.candidate.split("/", 1)[1] for job in grouped)
        group = (
            f"one worker in this process (Ray Train local mode) x {scaling.cpus_per_worker:g} CPU(s)"
            if in_process
            else f"one worker group of {scaling.num_workers} worker(s) x {scaling.cpus_per_worker:g} CPU(s)"
        )
        print(f"train[{dataset}]: {names} in {group}, Ray run {run_name}", flush=True)
        by_candidate = fit_candidates(
            grouped, scaling, storage, run_name, keep=compute.checkpoints_to_keep, loading=loading
        )
        outcomes = {name: by_candidate[job.candidate] for name, job in jobs.items() if job in grouped}
        finished_runs.append(run_name)
    group_seconds = time.perf_counter() - started
    if search is not None:
        name = search.candidate
        outcome, jobs[name], searched[name], runs = run_search(
            dataset, name, params, compute, meta, jobs[name], spec, plan.scaling(compute), storage, data_hash, loading
        )
        outcomes[name] = outcome
        finished_runs.extend(runs)
    failed = {name: o.error for name, o in outcomes.items() if o.status == "failed"}
    if len(failed) == len(jobs):
        raise PipelineInputError(f"train[{dataset}]: every candidate failed: " + "; ".join(failed.values()))

    # Streamed over several ranks: their rows are checked against the split's (one more read of it, here).
    contents = _contents_digest(dataset) if loading == "stream" and scaling.num_workers > 1 else None
    with atomic_dir(where.train_dir) as out:
        for name, job in jobs.items():
            outcome = outcomes[name]
            entry = {"family": job.model_spec["family"], "status": outcome.status, "epochs_run": len(outcome.history)}
            entry["workers"] = outcome.placement  # node id, host and pid of each rank; its weights' and shards' digests
            entry["class_weights"] = weights_record(dataset, job, meta)
            entry["rank_check"] = rank_check(dataset, name, outcome.placement, contents)
            if outcome.status == "failed":
                entry["error"] = outcome.error
                print(f"train[{dataset}]: {name} FAILED: {outcome.error}", flush=True)
            else:
                entry["best_epoch"] = export_candidate(out, where, name, job, outcome, meta, searched.get(name))
                entry["val_metrics"] = outcome.best_metrics
            entry["seconds"] = sum(r.get("epoch_seconds", 0.0) for r in outcome.history)
            if name in searched:
                entry["searched"] = searched[name]
            summary["candidates"][name] = CandidateSummary.model_validate(entry).model_dump(exclude_none=True)
        summary["worker_group_seconds"] = group_seconds  # one fit for all grouped candidates: start to teardown
        write_json(out / where.train_summary.name, TrainSummary.model_validate(summary).model_dump(exclude_none=True))
    for run_name in finished_runs:  # only after the outputs are safely in place
        remove_run(storage, run_name)
    return summary


@cli_entry
def main() -> None:
    params, dataset = pipeline_and_dataset("train")
    summary = train(dataset, params.datasets[dataset], params.train)
    for name, c in summary["candidates"].items():
        if c["status"] == "failed":
            continue
        shown = ", ".join(f"{k}={v:.4f}" for k, v in c["val_metrics"].items() if k.startswith("val/"))
        print(f"train[{dataset}]: {name}: best epoch {c['best_epoch'] + 1} of {c['epochs_run']} ({shown})")


if __name__ == "__main__":
    main()
