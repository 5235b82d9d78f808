"""Task metrics through torchmetrics, one function per task family.

Every number here is checked against scikit-learn/NumPy in tests/test_metrics.py.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torchmetrics.functional as tmf

TOP_K = 5


def regression_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    pred, target = pred.double().reshape(-1), target.double().reshape(-1)
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

    def per_class(values: torch.Tensor) -> dict[str, float]:
        return {name: float(v) for name, v in zip(class_names, values)}

    return {
        "accuracy": float(tmf.accuracy(pred, target, average="micro", **kw)),
        "balanced_accuracy": balanced_accuracy(pred, target, n_classes),
        "precision_macro": float(tmf.precision(pred, target, average="macro", **kw)),
        "recall_macro": float(tmf.recall(pred, target, average="macro", **kw)),
        "f1_macro": float(tmf.f1_score(pred, target, average="macro", **kw)),
        "iou_macro": float(tmf.jaccard_index(pred, target, average="macro", **kw)),
        "precision_per_class": per_class(tmf.precision(pred, target, average="none", **kw)),
        "recall_per_class": per_class(tmf.recall(pred, target, average="none", **kw)),
        "f1_per_class": per_class(tmf.f1_score(pred, target, average="none", **kw)),
        "iou_per_class": per_class(tmf.jaccard_index(pred, target, average="none", **kw)),
    }


def balanced_accuracy(pred: torch.Tensor, target: torch.Tensor, n_classes: int) -> float:
    """The mean recall of the classes present in `target` (scikit-learn's balanced_accuracy_score).

    Unlike recall_macro, a class that is predicted but absent from the split does not count as a zero.
    """
    cm = tmf.confusion_matrix(pred.long().view(-1), target.long().view(-1), task="multiclass", num_classes=n_classes)
    support = cm.sum(dim=1)
    present = support > 0
    return float((cm.diagonal()[present].double() / support[present]).mean())


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, n_classes: int) -> list[list[int]]:
    cm = tmf.confusion_matrix(pred.long().view(-1), target.long().view(-1), task="multiclass", num_classes=n_classes)
    return cm.tolist()  # rows: actual, columns: predicted


def next_word_metrics(logits: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Perplexity (exp of the mean cross-entropy) and top-1 / top-k accuracy of the next word."""
    return next_word_scores(next_word_rows(logits, target))


def next_word_rows(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(n, 3) float64: each row's target probability, whether the target is the top word, and whether it is among
    the top k. A split is scored from these, chunk by chunk, never holding its (rows x vocabulary) logits; the
    numbers are torchmetrics' Perplexity and micro top-k accuracy, step for step (tests/test_evaluate_chunks.py)."""
    logits, target = logits.double(), target.long().view(-1)
    probs = torch.softmax(logits, dim=1)[torch.arange(len(target)), target]
    top1 = logits.argmax(dim=1) == target
    topk = (logits.topk(min(TOP_K, logits.shape[-1]), dim=1).indices == target[:, None]).any(dim=1)
    return torch.stack([probs, top1.double(), topk.double()], dim=1)


def next_word_scores(rows: torch.Tensor) -> dict[str, float]:
    """next_word_metrics from next_word_rows (of every chunk, joined)."""
    n = torch.tensor(len(rows))
    hits = rows[:, 1:].sum(dim=0)  # whole numbers, exact in float64
    return {
        # Perplexity's own arithmetic: exp(-sum(log p) / n), the sum kept in its float32 state.
        "perplexity": float(torch.exp((-rows[:, 0].contiguous().log().sum()).float() / n)),
        # Accuracy's: hits / rows in float32.
        "accuracy": float(hits[0].float() / n.float()),
        f"top{TOP_K}_accuracy": float(hits[1].float() / n.float()),
    }


def unigram_perplexity(train_targets: torch.Tensor, target: torch.Tensor, vocab_size: int) -> float:
    """The baseline a language model must beat: word frequencies of the training split (add-one smoothed)."""
    return unigram_perplexity_of_counts(torch.bincount(train_targets.long().view(-1), minlength=vocab_size), target)


def unigram_perplexity_of_counts(counts: torch.Tensor, target: torch.Tensor) -> float:
    """unigram_perplexity from each word's training count (a split's chunks' counts, summed)."""
    counts = counts.double() + 1.0
    log_p = (counts / counts.sum()).log()
    return float(math.exp(-log_p[target.long().view(-1)].mean()))


def _ratio(a: float, b: float | None) -> float:
    return a / b if b else float("nan")


def per_step_rmse(pred: torch.Tensor, target: torch.Tensor) -> list[float]:
    """RMSE of each step of the horizon (columns of (n, horizon) tensors; one value for (n,))."""
    err = (pred.double() - target.double()).reshape(len(target), -1)
    return [float(v) for v in err.pow(2).mean(dim=0).sqrt()]


def forecast_metrics(
    pred: torch.Tensor,
    target: torch.Tensor,
    last_value: torch.Tensor,
    seasonal_value: torch.Tensor,
    mase_scale: float | None = None,
) -> dict[str, Any]:
    """The model's errors beside the naive last-value and seasonal-naive forecasts from the same origins (all in
    the series' units). Tensors are (n,) for one step or (n, horizon): rmse/mae/mase are over every step,
    `rmse_per_step` is a list. MASE divides the MAE by `mase_scale`, the in-sample seasonal-naive MAE of the
    training part (NaN when unknown)."""
    scores: dict[str, Any] = regression_metrics(pred, target)
    scores["mase"] = _ratio(scores["mae"], mase_scale)
    scores["rmse_per_step"] = per_step_rmse(pred, target)
    for name, baseline in (("naive_last", last_value), ("seasonal_naive", seasonal_value)):
        b = regression_metrics(baseline, target)
        scores[f"{name}_rmse"], scores[f"{name}_mae"] = b["rmse"], b["mae"]
        scores[f"{name}_mase"] = _ratio(b["mae"], mase_scale)
        scores[f"{name}_rmse_per_step"] = per_step_rmse(baseline, target)
    scores["rmse_vs_naive_last"] = _ratio(scores["rmse"], scores["naive_last_rmse"])
    scores["rmse_vs_seasonal_naive"] = _ratio(scores["rmse"], scores["seasonal_naive_rmse"])
    return scores
