"""Stage 4, evaluate: torchmetrics on val and test for every candidate of a dataset; DVC metrics and plots.

The splits are read in chunks of a shard's size (`handoffs.splits.SplitChunks.in_batches`), never whole: of each
chunk only what the scorer and the plots need is kept (scoring.score_chunks), so a test split larger than memory is
scored.

python -m pipelines.stages.evaluate <dataset>
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from models.task_kinds import get_task
from pipelines.atomic import atomic_dir, read_json, write_json
from pipelines.config import EvaluateParams, PipelineParams
from pipelines.config.task_choices import DatasetEvaluateParams
from pipelines.errors import PipelineInputError, Unavailable, cli_entry
from pipelines.evaluation import plots
from pipelines.evaluation.baselines import compute_baselines
from pipelines.evaluation.comparison import comparison_table, log_lines, unbeaten
from pipelines.evaluation.horizon import horizon_frame
from pipelines.evaluation.metrics import confusion_matrix
from pipelines.evaluation.scoring import inverse_of, score_chunks
from pipelines.handoffs import EvaluationReport, TrainSummary, flat_key, metric_key
from pipelines.handoffs.splits import SHARD_BYTES, SplitChunks
from pipelines.paths import DatasetPaths
from pipelines.stages.cli import pipeline_and_dataset
from pipelines.stages.prepare import read_meta

PLOT_KINDS = ("learning", "confusion", "predictions")  # one directory each, declared as DVC plots


class PlotInputs(NamedTuple):
    """What the test plots read of the split's inputs (never the whole x)."""

    kept: np.ndarray | None  # scoring.Rows.inputs: a forecast's last and seasonal-naive values per window
    last: np.ndarray  # the split's last input row: the history a horizon's forecast starts from


@torch.no_grad()
def model_outputs(checkpoint: Path, x: np.ndarray, batch_size: int = 1024) -> tuple[torch.Tensor, dict]:
    """Raw outputs (logits or values) of a weights-only checkpoint, and its info.

    The bare nn.Module from the catalogue: no Lightning, no Ray (evaluate stays cheap to start).
    """
    from models.checkpoint import load_checkpoint

    net, info = load_checkpoint(checkpoint)
    out = [net(torch.from_numpy(x[start : start + batch_size])) for start in range(0, len(x), batch_size)]
    return torch.cat(out), info


def _confusion_plot(meta: dict, name: str, pred: np.ndarray, inputs, y: np.ndarray, out: Path, scores: dict) -> None:
    classes = meta["classes"]
    pd.DataFrame({"actual": [classes[i] for i in y], "predicted": [classes[i] for i in pred]}).to_csv(
        out / "confusion" / f"{name}.csv", index=False
    )
    cm = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(y), len(classes))
    scores["confusion_matrix"] = cm
    title = f"{meta['dataset']} / {name}: test confusion matrix"
    plots.confusion_matrix(cm, classes, title, out / "plots" / f"confusion_{name}.png")


def _regression_plot(meta: dict, name: str, pred: np.ndarray, inputs, y: np.ndarray, out: Path, scores: dict) -> None:
    true = inverse_of(meta)(y.reshape(-1))  # targets are scaled in prepare; plots are in the label's units
    pd.DataFrame({"actual": true, "predicted": pred}).to_csv(out / "predictions" / f"{name}.csv", index=False)
    title = f"{meta['dataset']} / {name}: test predictions"
    plots.predicted_vs_true(true, pred, title, out / "plots" / f"predicted_vs_true_{name}.png")


def _forecast_plot(
    meta: dict, name: str, pred: np.ndarray, inputs: PlotInputs, y: np.ndarray, out: Path, scores: dict
) -> None:
    inverse = inverse_of(meta)
    if pred.ndim == 2:  # a horizon: the forecast from the last test origin, and the error per step
        frame = horizon_frame(meta, pred, inputs.last, y, inverse)
        frame.to_csv(out / "predictions" / f"{name}.csv", index=False)
        title = f"{meta['dataset']} / {name}: {len(frame)}-step forecast from the last test origin"
        plots.horizon_forecast(inverse(inputs.last[-1]), frame, title, out / "plots" / f"forecast_{name}.png")
        steps = {"model": scores["rmse_per_step"], "seasonal naive": scores["seasonal_naive_rmse_per_step"]}
        title = f"{meta['dataset']} / {name}: test RMSE per forecast step"
        plots.per_step(
            steps | {"naive last value": scores["naive_last_rmse_per_step"]},
            title,
            out / "plots" / f"rmse_per_step_{name}.png",
        )
        return
    true, last = inverse(y.reshape(-1)), inverse(inputs.kept[:, 0])
    frame = pd.DataFrame({"step": np.arange(len(true)), "actual": true, "predicted": pred, "naive_last": last})
    frame.to_csv(out / "predictions" / f"{name}.csv", index=False)
    title = (
        f"{meta['dataset']} / {name}: test forecast (RMSE {scores['rmse']:.2f}, naive {scores['naive_last_rmse']:.2f})"
    )
    plots.forecast(frame, title, out / "plots" / f"forecast_{name}.png")


# CSV for DVC plots under out/<kind>/ and a PNG under out/plots/, per task (next-word has none).
TEST_PLOTS = {
    "binary": _confusion_plot,
    "multiclass": _confusion_plot,
    "regression": _regression_plot,
    "forecast": _forecast_plot,
}


def write_test_plots(
    meta: dict, name: str, pred: np.ndarray, inputs: PlotInputs, y: np.ndarray, out: Path, scores: dict
) -> None:
    """CSV for DVC plots under out/<kind>/, a PNG under out/plots/."""
    plot = TEST_PLOTS.get(meta["task"])
    if plot is not None:
        plot(meta, name, pred, inputs, y, out, scores)


def champion_of(params: PipelineParams, dataset: str, test: SplitChunks) -> dict | None:
    """The promote alias's current version scored on this run's test split.

    None: the alias is not set, or the registry did not answer (register, which needs it anyway, scores the
    champion then: an outage fails the stage that cannot do without the registry, not this one)."""
    from pipelines.evaluation.champion import score_champion
    from pipelines.registry.local import open_configured

    model_name = params.datasets[dataset].register.model_name
    alias, batch_size = params.register.promote_alias, params.evaluate.batch_size
    try:
        registry = open_configured(params.register.registry)
        return score_champion(dataset, read_meta(dataset), registry, model_name, alias, test, batch_size)
    except Unavailable as err:
        print(f"evaluate[{dataset}]: warning: {alias} of {model_name} not scored here ({err}); register scores it")
        return None


def primary_metric(dataset: str, task: str, choice: DatasetEvaluateParams) -> tuple[str, str, str]:
    """(metric, mode, what set it): the dataset's evaluate.primary_metric, checked against the task the data made."""
    key = f"datasets.{dataset}.evaluate.primary_metric"
    try:
        metric, mode = get_task(task).resolve_primary(choice.primary_metric)
    except ValueError as err:
        raise PipelineInputError(f"{key}: {err}") from None
    return metric, mode, key if choice.primary_metric != "auto" else f"the {task} task's default ({key}: auto)"


def selection(primary: str, mode: str, set_by: str, candidates: dict[str, dict]) -> tuple[str, dict]:
    """The best candidate by val/<primary>, and the record of that choice (a NaN value ranks last)."""
    key = f"val/{primary}"
    values = {n: float(s[key]) for n, s in candidates.items() if np.isfinite(s.get(key, np.nan))}
    sign = -1.0 if mode == "max" else 1.0
    ranked = sorted(candidates, key=lambda n: sign * values[n] if n in values else np.inf)
    return ranked[0], {"metric": key, "mode": mode, "set_by": set_by, "values": values}


def evaluate(
    dataset: str,
    params: EvaluateParams,
    champion_for=None,
    choice: DatasetEvaluateParams | None = None,
    chunk_bytes: int = SHARD_BYTES,
) -> dict:
    """Score every candidate and the baselines; `champion_for(test: SplitChunks)` scores the alias's current version.

    choice: the dataset's evaluate section (its primary metric; default: the task's)."""
    from models.checkpoint import load_checkpoint

    where = DatasetPaths(dataset)
    meta = read_meta(dataset).dump()
    kind = get_task(meta["task"])
    summary = TrainSummary.model_validate(read_json(where.train_summary))
    primary, mode, set_by = primary_metric(dataset, kind.name, choice or DatasetEvaluateParams())
    folders = {split: where.split_dir(split) for split in ("train", "val", "test")}
    splits = {split: SplitChunks.in_batches(f, params.batch_size, chunk_bytes) for split, f in folders.items()}
    candidates: dict[str, dict] = {}
    # A failed candidate (non-finite loss) has no checkpoint: listed, never scored nor ranked.
    failed = {n: c.error or "failed" for n, c in summary.candidates.items() if c.status == "failed"}
    if len(failed) == len(summary.candidates):
        raise PipelineInputError(
            f"evaluate[{dataset}]: every candidate failed in training: " + "; ".join(failed.values())
        )
    # The baselines are fitted with every class weighting a scored candidate trained with: each beside its like.
    weightings = {c.class_weights.setting for n, c in summary.candidates.items() if n not in failed and c.class_weights}
    baselines = compute_baselines(dataset, meta, splits, weightings)
    histories = {}

    # The whole data/evaluate/<dataset>/ appears at once: metrics.json, the PNGs
    # (plots/) and the CSVs DVC plots (learning/, confusion/, predictions/).
    with atomic_dir(where.evaluate_dir) as out:
        plot_dir = out / where.plots_dir.name
        plot_dir.mkdir()
        for sub in PLOT_KINDS:
            (out / sub).mkdir()
        scored = [n for n in summary.candidates if n not in failed]
        for k, name in enumerate(scored, start=1):
            if len(scored) > 1:
                print(f"evaluate[{dataset}]: scoring {name} (candidate {k} of {len(scored)})", flush=True)
            net, info = load_checkpoint(where.candidate_checkpoint(name))
            scores = {}
            for split in ("val", "test"):
                split_scores, pred, rows, last = score_chunks(meta, net, info["loss"], splits[split], params.batch_size)
                if split == "test":
                    write_test_plots(meta, name, pred, PlotInputs(rows.inputs, last), rows.y, out, split_scores)
                scores.update({metric_key(split, k): v for k, v in split_scores.items()})
            candidates[name] = scores
            # history.csv columns are `split/metric` as logged (`val/loss`); dvc.yaml's learning plot
            # names them as its x/y fields (DVC takes a '/' in a field name as it is).
            history = pd.read_csv(where.candidate_history(name)).rename(columns=flat_key)
            history.to_csv(out / "learning" / f"{name}.csv", index=False)
            histories[name] = history
        plots.learning_curves(histories, plot_dir / "learning_curves.png", title=f"{dataset}: learning curves")
        best, chosen = selection(primary, mode, set_by, candidates)
        report = EvaluationReport(
            dataset=dataset,
            task=kind.name,
            primary_metric=primary,
            mode=mode,
            candidates=candidates,
            baselines=baselines,
            failed_candidates=failed,
            best_candidate=best,
            best={
                "candidate": best,
                **{k: v for k, v in candidates[best].items() if k.startswith("test/") and isinstance(v, float)},
            },
            selection=chosen,
        ).model_dump()
        report["champion"] = champion_for(splits["test"]) if champion_for else None
        report["unbeaten_baselines"] = [entry["baseline"] for entry in unbeaten(report)]
        (plot_dir / "comparison.md").write_text(comparison_table(report))
        write_json(out / where.metrics_file.name, report)
    return report


@cli_entry
def main() -> None:
    params, dataset = pipeline_and_dataset("evaluate")
    choice = params.datasets[dataset].evaluate
    report = evaluate(dataset, params.evaluate, lambda test: champion_of(params, dataset, test), choice)
    print("\n".join(log_lines(dataset, report, str(DatasetPaths(dataset).plots_dir))))


if __name__ == "__main__":
    main()
