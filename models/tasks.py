"""What a task means for the model's head, its loss and its outputs (torch; no Lightning).

The task table itself (losses, output size, metrics, directions) is plain data in
models/task_kinds.py; this module adds what needs tensors.
"""

from __future__ import annotations

import torch
from torch import nn

from models.task_kinds import TASKS, Task, get_task

__all__ = [
    "DEFAULT_LOSS",
    "ClassWeightedBCE",
    "TASKS",
    "Task",
    "get_task",
    "loss_target",
    "make_loss",
    "output_size",
    "predict",
    "resolve_loss",
    "update_val_score",
    "val_score_metric",
]

DEFAULT_LOSS = {name: task.default_loss for name, task in TASKS.items()}


def resolve_loss(task: str, loss: str, n_classes: int | None = None) -> str:
    """Pick the task's default loss or check that the chosen one can work."""
    return get_task(task).resolve_loss(loss, n_classes)


def output_size(task: str, loss: str, n_classes: int | None, horizon: int = 1) -> int:
    return get_task(task).output_size(loss, n_classes, horizon)


class ClassWeightedBCE(nn.Module):
    """BCE on one logit with a weight per class, averaged as CrossEntropyLoss(weight=) averages:
    sum(w[y] * loss) / sum(w[y]) over the batch, so BCE and CCE weigh a binary task's classes alike."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        per_row = nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")  # (B, 1)
        w = self.weight[target.long()].to(per_row.dtype)  # (B, 1): each row's class weight
        return (w * per_row).sum() / w.sum()


def make_loss(loss: str, class_weights: list[float] | None = None) -> nn.Module:
    """The loss module; `class_weights` (one per class, from the training split) weigh BCE and CCE."""
    if class_weights is None:
        return {"mse": nn.MSELoss(), "bce": nn.BCEWithLogitsLoss(), "cce": nn.CrossEntropyLoss()}[loss]
    weight = torch.tensor(class_weights, dtype=torch.float32)
    if loss == "cce":
        return nn.CrossEntropyLoss(weight=weight)
    if loss == "bce":
        if len(class_weights) != 2:
            raise ValueError(f"bce weighs two classes; got {len(class_weights)} class weights")
        return ClassWeightedBCE(weight)
    raise ValueError(f"class weights need a classification loss (bce or cce), not {loss!r}")


def loss_target(loss: str, y: torch.Tensor) -> torch.Tensor:
    """Shape/dtype the labels the way each loss expects them."""
    if loss == "bce":
        return y.float().view(-1, 1)
    if loss == "cce":
        return y.long().view(-1)
    return y.float().reshape(len(y), -1)  # (B, 1), or (B, horizon) for a multi-step forecast


def predict(logits: torch.Tensor, task: str | Task, loss: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(point prediction, class probabilities or None). Sigmoid/Softmax live here."""
    kind = task if isinstance(task, Task) else get_task(task)
    if kind.real_valued:  # (B,) for one value, (B, horizon) for a multi-step forecast
        return (logits.view(-1) if logits.shape[-1] == 1 else logits), None
    if loss == "bce":
        p1 = torch.sigmoid(logits.view(-1))
        return (p1 >= 0.5).long(), torch.stack([1 - p1, p1], dim=1)
    probs = torch.softmax(logits, dim=-1)
    return probs.argmax(dim=-1), probs


def val_score_metric(task: str | Task, n_classes: int | None):
    """The torchmetrics object behind the task's val_score (fed by update_val_score)."""
    import torchmetrics  # lazy: the registry and predict never need it

    kind = task if isinstance(task, Task) else get_task(task)
    if kind.val_score == "val/perplexity":
        return torchmetrics.text.Perplexity()
    if kind.val_score == "val/rmse":
        return torchmetrics.MeanSquaredError(squared=False)
    return torchmetrics.Accuracy(task="multiclass", num_classes=max(2, n_classes or 2))


def update_val_score(metric, task: str | Task, loss: str, logits: torch.Tensor, y: torch.Tensor) -> None:
    """Feed one validation batch to the metric val_score_metric built."""
    kind = task if isinstance(task, Task) else get_task(task)
    if kind.val_score == "val/perplexity":
        metric.update(logits.float().unsqueeze(1), y.view(-1, 1))  # (B, 1, V) vs (B, 1)
    else:
        point, _ = predict(logits, kind, loss)
        metric.update(point.reshape(-1), y.reshape(-1).to(point.dtype))  # every step of a horizon
