"""Choices that depend on the dataset's task: its primary metric (`evaluate`) and its class weighting (`train`).

The task is known for sure only once the data is read (a table's `ingest.task: auto` is inferred from its
label), so the config checks what it can from the modality and `ingest.task`, and the evaluate and train
stages check again against the task itself, naming the same keys.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import Field

from models.task_kinds import TASKS
from pipelines.config.modalities import Strict

# The tasks each modality's data can make (a table's ingest.task narrows them to one).
MODALITY_TASKS: dict[str, tuple[str, ...]] = {
    "table": ("binary", "multiclass", "regression"),
    "image": ("binary", "multiclass"),
    "text": ("next_word",),
    "series": ("forecast",),
}


class DatasetEvaluateParams(Strict):
    """How a dataset's candidates are judged: per dataset, since each task reports its own metrics."""

    primary_metric: str = Field(
        "auto",
        min_length=1,
        description="Picks the best candidate (on val) and decides promotion (on test). auto: the task's own "
        "(accuracy, rmse, perplexity); or any metric the task reports, e.g. f1_macro or balanced_accuracy "
        "for imbalanced classes",
    )


def possible_tasks(modality: str, ingest: Any) -> tuple[str, ...]:
    """The tasks this dataset may turn out to be, from its modality and (tables) ingest.task."""
    chosen = getattr(ingest, "task", "auto")
    return (chosen,) if chosen != "auto" else MODALITY_TASKS.get(modality, tuple(TASKS))


def metrics_of(tasks: Iterable[str]) -> list[str]:
    """Every metric some of `tasks` reports, in the tasks' own order."""
    return list(dict.fromkeys(m for task in tasks for m in TASKS[task].metrics))


def check_primary_metric(modality: str, ingest: Any, evaluate: DatasetEvaluateParams) -> None:
    """The primary metric is one this dataset's task can report."""
    choice, tasks = evaluate.primary_metric, possible_tasks(modality, ingest)
    if choice != "auto" and choice not in metrics_of(tasks):
        raise ValueError(
            f"evaluate.primary_metric: {choice!r} is not a metric a {' or '.join(tasks)} task reports "
            f"({modality} data); use auto or one of: {', '.join(metrics_of(tasks))}"
        )


def check_class_weights(modality: str, ingest: Any, train: Any) -> None:
    """Class weights only where the labels are classes (not values, nor a vocabulary's next words)."""
    tasks = possible_tasks(modality, ingest)
    if any(TASKS[task].has_classes for task in tasks):
        return
    what = f"a {' or '.join(tasks)} task has no classes to weigh"
    if train.class_weights != "none":
        raise ValueError(f"train.class_weights: {what}; use none")
    for name, cand in train.candidates.items():
        if cand.class_weights not in (None, "none"):
            raise ValueError(f"train.candidates.{name}.class_weights: {what}; use none or leave it out")
