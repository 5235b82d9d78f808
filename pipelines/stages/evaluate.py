"""Stage 4, evaluate: torchmetrics on val and test for every candidate of a dataset; DVC metrics and plots.

python -m pipelines.stages.evaluate <dataset>
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from models.task_kinds import get_task
from pipelines.atomic import atomic_dir, read_json, write_json
from pipelines.config import EvaluateParams
from pipelines.errors import cli_entry
from pipelines.evaluation import plots
from pipelines.evaluation.horizon import horizon_frame
from pipelines.evaluation.metrics import confusion_matrix, unigram_perplexity
from pipelines.evaluation.scoring import inverse_of, score
from pipelines.handoffs import EvaluationReport, TrainSummary, flat_key, metric_key
from pipelines.paths import DatasetPaths
from pipelines.stages.cli import pipeline_and_dataset
from pipelines.stages.prepare import load_split, read_meta

PLOT_KINDS = ("learning", "confusion", "predictions")  # one directory each, declared as DVC plots


@torch.no_grad()
def model_outputs(checkpoint: Path, x: np.ndarray, batch_size: int = 1024) -> tuple[torch.Tensor, dict]:
    """Raw outputs (logits or values) of a weights-only checkpoint, and its info.

    The bare nn.Module from the catalogue: no Lightning, no Ray (evaluate stays cheap to start).
    """
    from models.checkpoint import load_checkpoint

    net, info = load_checkpoint(checkpoint)
    out = [net(torch.from_numpy(x[start : start + batch_size])) for start in range(0, len(x), batch_size)]
    return torch.cat(out), info


def _confusion_plot(meta: dict, name: str, pred: np.ndarray, x, y: np.ndarray, out: Path, scores: dict) -> None:
    classes = meta["classes"]
    pd.DataFrame({"actual": [classes[i] for i in y], "predicted": [classes[i] for i in pred]}).to_csv(
        out / "confusion" / f"{name}.csv", index=False
    )
    cm = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(y), len(classes))
    scores["confusion_matrix"] = cm
    title = f"{meta['dataset']} / {name}: test confusion matrix"
    plots.confusion_matrix(cm, classes, title, out / "plots" / f"confusion_{name}.png")


def _regression_plot(meta: dict, name: str, pred: np.ndarray, x, y: np.ndarray, out: Path, scores: dict) -> None:
    pd.DataFrame({"actual": y.reshape(-1), "predicted": pred}).to_csv(out / "predictions" / f"{name}.csv", index=False)
    title = f"{meta['dataset']} / {name}: test predictions"
    plots.predicted_vs_true(y.reshape(-1), pred, title, out / "plots" / f"predicted_vs_true_{name}.png")


def _forecast_plot(meta: dict, name: str, pred: np.ndarray, x, y: np.ndarray, out: Path, scores: dict) -> None:
    inverse = inverse_of(meta)
    if pred.ndim == 2:  # a horizon: the forecast from the last test origin, and the error per step
        frame = horizon_frame(meta, pred, x, y, inverse)
        frame.to_csv(out / "predictions" / f"{name}.csv", index=False)
        title = f"{meta['dataset']} / {name}: {len(frame)}-step forecast from the last test origin"
        plots.horizon_forecast(inverse(x[-1]), frame, title, out / "plots" / f"forecast_{name}.png")
        steps = {"model": scores["rmse_per_step"], "seasonal naive": scores["seasonal_naive_rmse_per_step"]}
        title = f"{meta['dataset']} / {name}: test RMSE per forecast step"
        plots.per_step(
            steps | {"naive last value": scores["naive_last_rmse_per_step"]},
            title,
            out / "plots" / f"rmse_per_step_{name}.png",
        )
        return
    true, last = inverse(y.reshape(-1)), inverse(x[:, -1])
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


def _unigram(dataset: str, meta: dict, splits: dict) -> float:
    """The classical baseline a language model must beat: training word frequencies."""
    train_y = torch.from_numpy(load_split(dataset, "train")[1])
    return unigram_perplexity(train_y, torch.from_numpy(splits["test"][1]), meta["vocab_size"])


def _exponential_smoothing(dataset: str, meta: dict, splits: dict) -> dict[str, float]:
    """Holt-Winters at the same horizon, from the same val and test origins (naive ones are in the scores)."""
    from pipelines.evaluation.forecast_baselines import exponential_smoothing

    return exponential_smoothing(meta, {"train": load_split(dataset, "train"), **splits}, inverse_of(meta))


# Baselines computed from the data alone, per task (naive and seasonal naive forecasts are part of the scores).
BASELINES = {
    "next_word": {"unigram_perplexity": _unigram},
    "forecast": {"exponential_smoothing": _exponential_smoothing},
}


def write_test_plots(
    meta: dict, name: str, pred: np.ndarray, x: np.ndarray, y: np.ndarray, out: Path, scores: dict
) -> None:
    """CSV for DVC plots under out/<kind>/, a PNG under out/plots/."""
    plot = TEST_PLOTS.get(meta["task"])
    if plot is not None:
        plot(meta, name, pred, x, y, out, scores)


def evaluate(dataset: str, params: EvaluateParams) -> dict:
    where = DatasetPaths(dataset)
    meta = read_meta(dataset).dump()
    kind = get_task(meta["task"])
    summary = TrainSummary.model_validate(read_json(where.train_summary))
    primary, mode = kind.primary_metric, kind.mode
    splits = {name: load_split(dataset, name) for name in ("val", "test")}
    candidates: dict[str, dict] = {}
    baselines = {key: compute(dataset, meta, splits) for key, compute in BASELINES.get(kind.name, {}).items()}
    histories = {}

    # The whole data/evaluate/<dataset>/ appears at once: metrics.json, the PNGs
    # (plots/) and the CSVs DVC plots (learning/, confusion/, predictions/).
    with atomic_dir(where.evaluate_dir) as out:
        plot_dir = out / where.plots_dir.name
        plot_dir.mkdir()
        for sub in PLOT_KINDS:
            (out / sub).mkdir()
        for name in summary.candidates:
            ckpt = where.candidate_checkpoint(name)
            scores = {}
            for split, (x, y) in splits.items():
                logits, info = model_outputs(ckpt, x, params.batch_size)
                split_scores, pred = score(meta, logits, info["loss"], x, y)
                if split == "test":
                    write_test_plots(meta, name, pred, x, y, out, split_scores)
                scores.update({metric_key(split, k): v for k, v in split_scores.items()})
            candidates[name] = scores
            # history.csv columns are `split/metric` as logged (`val/loss`); dvc.yaml's learning plot
            # names them as its x/y fields (DVC takes a '/' in a field name as it is).
            history = pd.read_csv(where.candidate_history(name)).rename(columns=flat_key)
            history.to_csv(out / "learning" / f"{name}.csv", index=False)
            histories[name] = history
        plots.learning_curves(histories, plot_dir / "learning_curves.png", title=f"{dataset}: learning curves")
        ranked = sorted(candidates, key=lambda n: candidates[n][f"val/{primary}"], reverse=mode == "max")
        report = EvaluationReport(
            dataset=dataset,
            task=kind.name,
            primary_metric=primary,
            mode=mode,
            candidates=candidates,
            baselines=baselines,
            best_candidate=ranked[0],
            best={
                "candidate": ranked[0],
                **{k: v for k, v in candidates[ranked[0]].items() if k.startswith("test/") and isinstance(v, float)},
            },
        ).model_dump()
        (plot_dir / "comparison.md").write_text(comparison_table(report))
        write_json(out / where.metrics_file.name, report)
    return report


def comparison_table(report: dict) -> str:
    """A Markdown table of every candidate's test metrics (the scalar ones)."""
    names = list(report["candidates"])
    keys = [k for k, v in report["candidates"][names[0]].items() if k.startswith("test/") and isinstance(v, float)]
    lines = [
        f"# {report['dataset']}: test metrics ({report['task']}; best by val {report['primary_metric']})",
        "",
        "| candidate | " + " | ".join(keys) + " |",
        "|---" * (len(keys) + 1) + "|",
    ]
    for name in names:
        scores = report["candidates"][name]
        lines.append(f"| {name} | " + " | ".join(f"{scores[k]:.4f}" for k in keys) + " |")
    for key, value in report.get("baselines", {}).items():
        lines.append(f"\nBaseline {baseline_text(key, value)}")
    return "\n".join(lines) + "\n"


def baseline_text(key: str, value: float | dict) -> str:
    """A baseline's value, or its `split/metric` values."""
    if isinstance(value, dict):
        return f"{key}: " + ", ".join(f"{k}={v:.4f}" for k, v in value.items())
    return f"{key}={value:.4f}"


@cli_entry
def main() -> None:
    params, dataset = pipeline_and_dataset("evaluate")
    report = evaluate(dataset, params.evaluate)
    primary = report["primary_metric"]
    for name, scores in report["candidates"].items():
        print(
            f"evaluate[{dataset}]: {name}: val/{primary}={scores[f'val/{primary}']:.4f}, "
            f"test/{primary}={scores[f'test/{primary}']:.4f}"
        )
    for key, value in report.get("baselines", {}).items():
        print(f"evaluate[{dataset}]: baseline {baseline_text(key, value)}")
    print(
        f"evaluate[{dataset}]: best candidate by val {primary}: {report['best_candidate']}; "
        f"plots in {DatasetPaths(dataset).plots_dir}/"
    )


if __name__ == "__main__":
    main()
