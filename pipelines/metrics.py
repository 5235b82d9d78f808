"""Task metrics through torchmetrics, one function per task family."""
from __future__ import annotations

import torch
import torchmetrics.functional as tmf

# The metric that picks the best candidate, and which way is better.
PRIMARY_METRIC = {"regression": ("rmse", "min"), "binary": ("accuracy", "max"), "multiclass": ("accuracy", "max")}


def regression_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    pred, target = pred.double().view(-1), target.double().view(-1)
    mse = tmf.mean_squared_error(pred, target)
    return {
        "mse": float(mse),
        "rmse": float(mse.sqrt()),
        "mae": float(tmf.mean_absolute_error(pred, target)),
        "r2": float(tmf.r2_score(pred, target)),
    }


def classification_metrics(pred: torch.Tensor, target: torch.Tensor, n_classes: int, class_names: list[str]) -> dict:
    kw = {"task": "multiclass", "num_classes": n_classes}
    pred, target = pred.long().view(-1), target.long().view(-1)
    per_class_f1 = tmf.f1_score(pred, target, average="none", **kw)
    return {
        "accuracy": float(tmf.accuracy(pred, target, average="micro", **kw)),
        "precision_macro": float(tmf.precision(pred, target, average="macro", **kw)),
        "recall_macro": float(tmf.recall(pred, target, average="macro", **kw)),
        "f1_macro": float(tmf.f1_score(pred, target, average="macro", **kw)),
        "iou_macro": float(tmf.jaccard_index(pred, target, average="macro", **kw)),
        "f1_per_class": {name: float(v) for name, v in zip(class_names, per_class_f1)},
    }


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, n_classes: int) -> list[list[int]]:
    cm = tmf.confusion_matrix(pred.long().view(-1), target.long().view(-1), task="multiclass", num_classes=n_classes)
    return cm.tolist()  # rows: actual, columns: predicted
