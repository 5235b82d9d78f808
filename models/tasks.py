"""What a task means for the model's head, its loss and its outputs."""

from __future__ import annotations

import torch
from torch import nn

DEFAULT_LOSS = {"regression": "mse", "forecast": "mse", "binary": "bce", "multiclass": "cce", "next_word": "cce"}
# Which losses can train which task; anything else is refused before training.
COMPATIBLE_LOSSES = {
    "regression": ("mse",),
    "forecast": ("mse",),
    "binary": ("bce", "cce"),
    "multiclass": ("cce",),
    "next_word": ("cce",),
}
REGRESSION_LIKE = ("regression", "forecast")  # one real-valued output


def resolve_loss(task: str, loss: str, n_classes: int | None = None) -> str:
    """Pick the task's default loss or check that the chosen one can work."""
    chosen = DEFAULT_LOSS[task] if loss == "auto" else loss
    if chosen not in COMPATIBLE_LOSSES[task]:
        what = f"a {n_classes}-class target" if n_classes else f"a {task} target"
        raise ValueError(f"loss '{chosen}' cannot train {what}; use one of: {', '.join(COMPATIBLE_LOSSES[task])}")
    return chosen


def output_size(task: str, loss: str, n_classes: int | None) -> int:
    if task in REGRESSION_LIKE:
        return 1
    if loss == "bce":
        return 1  # one logit, Sigmoid at prediction time
    return int(n_classes or 2)  # logits, Softmax at prediction time


def make_loss(loss: str) -> nn.Module:
    return {"mse": nn.MSELoss(), "bce": nn.BCEWithLogitsLoss(), "cce": nn.CrossEntropyLoss()}[loss]


def loss_target(loss: str, y: torch.Tensor) -> torch.Tensor:
    """Shape/dtype the labels the way each loss expects them."""
    if loss == "bce":
        return y.float().view(-1, 1)
    if loss == "cce":
        return y.long().view(-1)
    return y.float().view(-1, 1)


def predict(logits: torch.Tensor, task: str, loss: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(point prediction, class probabilities or None). Sigmoid/Softmax live here."""
    if task in REGRESSION_LIKE:
        return logits.view(-1), None
    if loss == "bce":
        p1 = torch.sigmoid(logits.view(-1))
        return (p1 >= 0.5).long(), torch.stack([1 - p1, p1], dim=1)
    probs = torch.softmax(logits, dim=-1)
    return probs.argmax(dim=-1), probs
