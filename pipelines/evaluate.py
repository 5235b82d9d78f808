"""Stage 4, evaluate: torchmetrics on val and test for every candidate; DVC metrics and plots."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipelines import paths, plots
from pipelines.atomic import atomic_dir, atomic_path, read_json, write_json
from pipelines.config import EvaluateParams, load_params
from pipelines.errors import cli_entry
from pipelines.prepare import load_split
from pipelines.metrics import PRIMARY_METRIC, classification_metrics, confusion_matrix, regression_metrics


@torch.no_grad()
def predict_arrays(checkpoint: Path, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Point predictions (class index or value) of a weights-only checkpoint."""
    import models  # noqa: F401
    from models.checkpoint import load_checkpoint
    from models.tasks import predict

    net, info = load_checkpoint(checkpoint)
    out = []
    for start in range(0, len(x), batch_size):
        logits = net(torch.from_numpy(x[start : start + batch_size]))
        out.append(predict(logits, info["task"], info["loss"])[0])
    return torch.cat(out).numpy()


def score(task: str, pred: np.ndarray, y: np.ndarray, classes: list[str] | None) -> dict:
    if task == "regression":
        return regression_metrics(torch.from_numpy(pred), torch.from_numpy(y))
    return classification_metrics(torch.from_numpy(pred), torch.from_numpy(y), len(classes), classes)


def evaluate(params: EvaluateParams) -> dict:
    meta = read_json(paths.PREPARED_META)
    task, classes = meta["task"], meta.get("classes")
    summary = read_json(paths.TRAIN_SUMMARY)
    primary, mode = PRIMARY_METRIC[task]
    splits = {name: load_split(name) for name in ("val", "test")}
    report: dict = {"task": task, "primary_metric": primary, "mode": mode, "candidates": {}}
    histories = {}

    with atomic_dir(paths.PLOTS_DIR) as plot_dir:
        for sub in ("learning", "confusion", "predictions"):
            (plot_dir / sub).mkdir()
        for name in summary["candidates"]:
            ckpt = paths.candidate_checkpoint(name)
            scores = {}
            for split, (x, y) in splits.items():
                pred = predict_arrays(ckpt, x, params.batch_size)
                scores[split] = score(task, pred, y, classes)
                if split != "test":
                    continue
                if task == "regression":
                    pd.DataFrame({"actual": y.reshape(-1), "predicted": pred}).to_csv(plot_dir / "predictions" / f"{name}.csv", index=False)
                    plots.predicted_vs_true(y.reshape(-1), pred, f"{name}: test predictions", plot_dir / f"predicted_vs_true_{name}.png")
                else:
                    pd.DataFrame({"actual": [classes[i] for i in y], "predicted": [classes[i] for i in pred]}).to_csv(plot_dir / "confusion" / f"{name}.csv", index=False)
                    cm = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(y), len(classes))
                    scores[split]["confusion_matrix"] = cm
                    plots.confusion_matrix(cm, classes, f"{name}: test confusion matrix", plot_dir / f"confusion_{name}.png")
            report["candidates"][name] = scores
            history = pd.read_csv(paths.candidate_history(name))
            history.rename(columns=lambda c: c.replace("/", "_")).to_csv(plot_dir / "learning" / f"{name}.csv", index=False)
            histories[name] = history
        plots.learning_curves(histories, plot_dir / "learning_curves.png")

    ranked = sorted(report["candidates"], key=lambda n: report["candidates"][n]["val"][primary], reverse=mode == "max")
    report["best_candidate"] = ranked[0]
    report["best"] = {"candidate": ranked[0], **{f"test_{k}": v for k, v in report["candidates"][ranked[0]]["test"].items() if isinstance(v, float)}}
    write_json(paths.METRICS_FILE, report)
    return report


@cli_entry
def main() -> None:
    report = evaluate(load_params().evaluate)
    primary = report["primary_metric"]
    for name, scores in report["candidates"].items():
        print(f"evaluate: {name}: val {primary}={scores['val'][primary]:.4f}, test {primary}={scores['test'][primary]:.4f}")
    print(f"evaluate: best candidate by val {primary}: {report['best_candidate']}; plots in {paths.PLOTS_DIR}/")


if __name__ == "__main__":
    main()
