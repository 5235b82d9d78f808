"""The label's class distribution in a table's profile, and the warning when a class is rare.

Fraud, churn and failure tables are mostly one class: a model that always says "no fraud" is 97 % accurate
and useless. Said at ingest, before anything trains, with the two keys that help (docs/imbalanced.md).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from pipelines.modalities.tables.columns import canonical

# A rarest class under this share of the rows is said to be rare (a common rule of thumb, not a law).
RARE_SHARE = 0.10


def class_counts(labels: pd.Series) -> dict[str, int]:
    """Rows per class of a classification label (classes as canonical strings)."""
    return {str(c): int(n) for c, n in labels.dropna().map(canonical).value_counts(sort=False).items()}


def label_distribution(counts: dict[str, int]) -> list[dict[str, Any]]:
    """[{"class", "rows", "share"}] from rows per class, commonest first (ties in the classes' order)."""
    total = sum(counts.values())
    rows = [{"class": c, "rows": n, "share": round(n / total, 4)} for c, n in counts.items()]
    return sorted(rows, key=lambda r: (-r["rows"], r["class"]))


def imbalance_warning(distribution: list[dict[str, Any]], label: str) -> str | None:
    """The sentence the log and the profile carry when the rarest class is under RARE_SHARE of the rows."""
    if len(distribution) < 2:
        return None
    rarest = distribution[-1]
    if rarest["share"] >= RARE_SHARE:
        return None
    return (
        f"label '{label}' is imbalanced: its rarest class {rarest['class']!r} is {rarest['share']:.1%} of the rows "
        f"({rarest['rows']} of {sum(r['rows'] for r in distribution)}), under {RARE_SHARE:.0%}. Accuracy flatters a "
        "model that ignores it: consider train.class_weights: balanced and evaluate.primary_metric: "
        "balanced_accuracy or f1_macro (docs/imbalanced.md)"
    )


def distribution_line(distribution: list[dict[str, Any]], label: str) -> str:
    """'label 'churn': no 930 (93.0%), yes 70 (7.0%)' for the log."""
    return f"label '{label}': " + ", ".join(f"{r['class']} {r['rows']} ({r['share']:.1%})" for r in distribution)
