"""Stage 3, train: each candidate through Ray Train; export its best checkpoint."""
from __future__ import annotations

import csv
import hashlib
import time
from pathlib import Path

from pipelines import paths
from pipelines.atomic import atomic_dir, read_json, write_json
from pipelines.config import CandidateParams, TrainParams, load_params
from pipelines.errors import PipelineInputError, cli_entry


def data_fingerprint(prepared_dir: Path = paths.PREPARED_DIR) -> str:
    digest = hashlib.sha256()
    for f in sorted(prepared_dir.iterdir()):
        digest.update(f.name.encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()


def make_job(name: str, cand: CandidateParams, params: TrainParams, meta: dict):
    """Check the candidate against the data (task, loss) and describe it as a TrainJob."""
    from models.catalogue import supported_tasks
    from models.tasks import output_size, resolve_loss
    from pipelines.ray_launcher import TrainJob

    import models  # noqa: F401

    task, classes = meta["task"], meta.get("classes")
    n_classes = len(classes) if classes else None
    if task not in supported_tasks(cand.family):
        raise PipelineInputError(f"train.candidates.{name}.family: {cand.family} cannot do a {task} task")
    try:
        loss = resolve_loss(task, cand.loss, n_classes)
    except ValueError as err:
        raise PipelineInputError(f"train.candidates.{name}.loss: {err}") from None
    monitor = params.early_stopping.monitor
    known = {"val/loss", "train/loss", "val/rmse" if task == "regression" else "val/accuracy"}
    if monitor not in known:
        raise PipelineInputError(f"train.early_stopping.monitor: {monitor!r} is not logged for a {task} task; use one of {sorted(known)}")
    spec = {
        "family": cand.family,
        "in_features": meta["in_features"],
        "out_features": output_size(task, loss, n_classes),
        "hidden": cand.hidden,
        "activation": cand.activation,
        "dropout": cand.dropout,
    }
    optim = {"optimizer": cand.optimizer, "lr": cand.lr, "weight_decay": cand.weight_decay, "momentum": cand.momentum}
    return TrainJob(
        candidate=name,
        model_spec=spec,
        optim=optim,
        task=task,
        loss=loss,
        n_classes=n_classes,
        data_dir=str(paths.absolute(paths.PREPARED_DIR)),
        seed=params.seed,
        epochs=params.epochs,
        batch_size=params.batch_size,
        monitor=monitor,
        mode=params.early_stopping.mode,
        patience=params.early_stopping.patience,
        use_gpu=params.use_gpu,
    )


def write_history(path: Path, rows: list[dict[str, float]]) -> None:
    columns = sorted({k for row in rows for k in row}, key=lambda k: (k != "epoch", k))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def train(params: TrainParams) -> dict:
    from models.checkpoint import net_state_from_lightning, save_checkpoint
    from pipelines import ray_launcher

    meta = read_json(paths.PREPARED_META)
    jobs = {name: make_job(name, cand, params, meta) for name, cand in params.candidates.items()}  # fail fast
    data_hash = data_fingerprint()
    storage = params.storage_path if "://" in params.storage_path else str(paths.absolute(params.storage_path))
    scaling = ray_launcher.Scaling(num_workers=params.num_workers, use_gpu=params.use_gpu, cpus_per_worker=params.cpus_per_worker)

    summary: dict = {"candidates": {}, "data_fingerprint": data_hash}
    summary["ray_start_s"] = ray_launcher.ensure_ray()
    finished_runs = []
    with atomic_dir(paths.TRAIN_DIR) as out:
        for name, job in jobs.items():
            run_name = f"{name}-{job.fingerprint(data_hash)}"
            print(f"train: {name} on {params.num_workers} worker(s), Ray run {run_name}", flush=True)
            started = time.perf_counter()
            outcome = ray_launcher.fit(job, scaling, storage, run_name, keep=params.checkpoints_to_keep)
            state, extra = net_state_from_lightning(outcome.best_checkpoint_dir / "checkpoint.ckpt")
            cand_dir = out / name
            cand_dir.mkdir()
            info = {
                "candidate": name,
                "model_spec": job.model_spec,
                "optim": job.optim,
                "task": job.task,
                "loss": job.loss,
                "n_classes": job.n_classes,
                "classes": meta.get("classes"),
                "best_epoch": extra["epoch"],
                "val_metrics": outcome.best_metrics,
                "data_meta": meta,
            }
            save_checkpoint(cand_dir / paths.candidate_checkpoint(name).name, state, info)
            write_history(cand_dir / paths.candidate_history(name).name, outcome.history)
            summary["candidates"][name] = {
                "best_epoch": extra["epoch"],
                "epochs_run": len(outcome.history),
                "val_metrics": outcome.best_metrics,
                "seconds": time.perf_counter() - started,
            }
            finished_runs.append(run_name)
        write_json(out / paths.TRAIN_SUMMARY.name, summary)
    for run_name in finished_runs:  # only after the outputs are safely in place
        ray_launcher.remove_run(storage, run_name)
    return summary


@cli_entry
def main() -> None:
    params = load_params()
    summary = train(params.train)
    for name, c in summary["candidates"].items():
        shown = ", ".join(f"{k}={v:.4f}" for k, v in c["val_metrics"].items() if k.startswith("val/"))
        print(f"train: {name}: best epoch {c['best_epoch'] + 1} of {c['epochs_run']} ({shown})")


if __name__ == "__main__":
    main()
