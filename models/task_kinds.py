"""The tasks as plain data: losses, output size, metrics and which way each improves.

No torch here (nor in models/__init__.py), so the model registry and the CLI can learn a
metric's direction without loading a deep-learning framework. The torch side of a task
(loss modules, turning logits into predictions) is in models/tasks.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["min", "max"]

# What evaluate reports for each kind of task (pipelines/evaluation/metrics.py; tests/test_metrics.py checks that
# the two agree) and which way each improves: any of them may be a dataset's primary metric.
CLASS_METRICS: dict[str, Mode] = {
    "accuracy": "max",
    "balanced_accuracy": "max",  # the mean of each class's recall: a majority-only classifier gets 1 / k
    "precision_macro": "max",
    "recall_macro": "max",
    "f1_macro": "max",
    "iou_macro": "max",
}
VALUE_METRICS: dict[str, Mode] = {"rmse": "min", "mse": "min", "mae": "min", "r2": "max"}
FORECAST_METRICS: dict[str, Mode] = {**VALUE_METRICS, "mase": "min"}
NEXT_WORD_METRICS: dict[str, Mode] = {"perplexity": "min", "accuracy": "max", "top5_accuracy": "max"}


@dataclass(frozen=True)
class Task:
    """One kind of problem the pipeline can learn."""

    name: str
    losses: tuple[str, ...]  # which losses can train it; anything else is rejected before training
    default_loss: str  # what loss "auto" means
    real_valued: bool  # real outputs (regression-like: one value, or one per forecast step); else class logits
    val_score: str  # the metric logged beside val/loss (and usable by early stopping)
    val_score_mode: Mode
    primary_metric: str  # the default one: picks the best candidate (on val) and decides promotion (on test)
    mode: Mode
    metrics: dict[str, Mode] = field(default_factory=dict)  # what evaluate reports; each may be the primary one
    has_classes: bool = False  # labels are classes that can be weighted (not values, nor a vocabulary's words)

    def resolve_loss(self, loss: str, n_classes: int | None = None) -> str:
        """Pick the task's default loss or check that the chosen one can work."""
        chosen = self.default_loss if loss == "auto" else loss
        if chosen not in self.losses:
            what = f"a {n_classes}-class target" if n_classes else f"a {self.name} target"
            raise ValueError(f"loss '{chosen}' cannot train {what}; use one of: {', '.join(self.losses)}")
        return chosen

    def output_size(self, loss: str, n_classes: int | None, horizon: int = 1) -> int:
        if self.real_valued:
            return horizon  # a value (a forecast: one per step of the horizon)
        if loss == "bce":
            return 1  # one logit with Sigmoid at prediction time
        return int(n_classes or 2)  # logits, Softmax at prediction time

    def logged_metrics(self) -> set[str]:
        """What a training run logs for this task (what early stopping and the search may watch)."""
        return {"train/loss", "val/loss", self.val_score}

    def metric_mode(self, metric: str) -> Mode | None:
        """Which way `metric` improves ('rmse', 'test/rmse', 'val/loss'), or None when the task doesn't say."""
        bare = metric.split("/", 1)[-1]
        if bare == "loss":
            return "min"
        if bare == self.primary_metric:
            return self.mode
        if bare == self.val_score.split("/", 1)[-1]:
            return self.val_score_mode
        return self.metrics.get(bare)

    def resolve_primary(self, choice: str = "auto") -> tuple[str, Mode]:
        """The primary metric and its direction: the task's default for "auto", else `choice` if the task reports it."""
        if choice == "auto":
            return self.primary_metric, self.mode
        if choice not in self.metrics:
            raise ValueError(
                f"{choice!r} is not a metric a {self.name} task reports; use auto or one of: {', '.join(self.metrics)}"
            )
        return choice, self.metrics[choice]


_REGRESSION = dict(
    losses=("mse",),
    default_loss="mse",
    real_valued=True,
    val_score="val/rmse",
    val_score_mode="min",
    primary_metric="rmse",
    mode="min",
)
_CLASSES = dict(
    real_valued=False,
    val_score="val/accuracy",
    val_score_mode="max",
    primary_metric="accuracy",
    mode="max",
    metrics=CLASS_METRICS,
    has_classes=True,
)

TASKS: dict[str, Task] = {
    "regression": Task("regression", **_REGRESSION, metrics=VALUE_METRICS),
    "forecast": Task("forecast", **_REGRESSION, metrics=FORECAST_METRICS),
    "binary": Task("binary", losses=("bce", "cce"), default_loss="bce", **_CLASSES),
    "multiclass": Task("multiclass", losses=("cce",), default_loss="cce", **_CLASSES),
    "next_word": Task(
        "next_word",
        losses=("cce",),
        default_loss="cce",
        real_valued=False,
        val_score="val/perplexity",
        val_score_mode="min",
        primary_metric="perplexity",
        mode="min",
        metrics=NEXT_WORD_METRICS,
    ),
}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}") from None
