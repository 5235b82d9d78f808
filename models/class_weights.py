"""Class weighting for imbalanced labels, as plain data (no torch): the setting and the weights it gives.

`balanced` is scikit-learn's rule, n_rows / (n_classes * rows of the class), counted on the training split,
so a rare class's mistakes cost as much in total as a common class's. The same numbers go to the network's
loss (models/tasks.py) and to the classical baselines (pipelines/evaluation/baselines.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

ClassWeighting = Literal["none", "balanced"]
WEIGHTINGS: tuple[ClassWeighting, ...] = ("none", "balanced")


def balanced_weights(counts: Sequence[int]) -> list[float]:
    """One weight per class from its training rows: n / (k * count).

    A class absent from the training split is counted as one row: it cannot be learned, but a validation
    batch holding only that class must not divide by a zero total weight (a NaN loss would fail the candidate).
    """
    if not counts:
        raise ValueError("class weights need the training split's count of each class; got none")
    total, k = sum(counts), len(counts)
    return [total / (k * max(1, int(c))) for c in counts]


def weights_for(setting: ClassWeighting, counts: Sequence[int]) -> list[float] | None:
    """The per-class weights a setting gives (None: unweighted)."""
    if setting == "none":
        return None
    if setting == "balanced":
        return balanced_weights(counts)
    raise ValueError(f"unknown class weighting {setting!r}; use one of: {', '.join(WEIGHTINGS)}")
