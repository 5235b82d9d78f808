"""Promotion: whether an alias (e.g. "production") should move to a new version, and why.

A pure decision on the two versions' test metrics (on the same test split when the run's evaluate scored the
champion on it); `ModelRegistry.promote` (registry/base.py) applies it under the alias lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from models.task_kinds import TASKS
from pipelines.handoffs import card_metrics
from pipelines.registry.errors import RegistryError

Mode = Literal["max", "min"]
Policy = Literal["better", "always"]


@dataclass(frozen=True)
class Promotion:
    """What `promote` did, and why."""

    promoted: bool
    name: str
    alias: str
    version: int
    previous: int | None  # the version the alias pointed to before
    reason: str
    metric: str | None = None
    value: float | None = None  # the candidate's test metric
    previous_value: float | None = None

    def __str__(self) -> str:
        verb = (
            f"{self.alias} -> v{self.version}"
            if self.promoted
            else f"{self.alias} stays at " + (f"v{self.previous}" if self.previous else "(unset)")
        )
        return f"{self.name}: {'promoted' if self.promoted else 'not promoted'}: {verb} ({self.reason})"


def _test_metric(card: dict[str, Any], metric: str) -> float:
    """The card's `test/<metric>`; cards of every version (metrics nested per split before v3) compare."""
    key = metric if "/" in metric else f"test/{metric}"
    try:
        return float(card_metrics(card)[key])
    except (KeyError, TypeError, ValueError):
        raise RegistryError(
            f"{card.get('name')} v{card.get('version')} has no test metric {metric!r} in its card "
            f"(card['metrics'][{key!r}]); pass another metric, or force the promotion"
        ) from None


def _metric_mode(card: dict[str, Any], metric: str) -> Mode:
    """Which way `metric` improves: the card says so for its primary metric, or the task does for any it reports."""
    if card.get("mode") in ("max", "min") and card.get("primary_metric") == metric:
        return card["mode"]
    kind = TASKS.get(card.get("task") or "")
    mode = kind.metric_mode(metric) if kind is not None else None
    if mode is not None:
        return mode
    raise RegistryError(f"cannot tell whether a higher or lower {metric!r} is better; pass mode='max' or 'min'")


def decide_promotion(
    name: str,
    alias: str,
    version: int,
    card: dict[str, Any],
    current: int | None,
    current_card: dict[str, Any] | None,
    primary_metric: str | None = None,
    mode: Mode | None = None,
    policy: Policy = "better",
    champion: dict[str, Any] | None = None,
) -> Promotion:
    """Whether `alias` should move from `current` to `version`: a pure function of what it is given.

    `champion` is the alias's version scored on the new version's own test split (a run's evaluate:
    pipelines/evaluation/champion.py); the decision is then taken on those two scores, on the same data.
    Without it (a promotion by hand) the two cards' test metrics are compared, each on its own test split."""
    if policy not in ("better", "always"):
        raise RegistryError(f"unknown promotion policy {policy!r}: use 'better' or 'always'")
    if mode not in (None, "max", "min"):
        raise RegistryError(f"unknown mode {mode!r}: use 'max' or 'min'")
    base = dict(name=name, alias=alias, version=version, previous=current)
    if current == version:
        return Promotion(False, reason=f"{alias} already points to v{version}", **base)
    if policy == "always":
        return Promotion(True, reason="forced (policy='always')", **base)
    if current is None or current_card is None:
        return Promotion(True, reason=f"{alias} was not set", **base)
    metric = primary_metric or card.get("primary_metric")
    if not metric:
        raise RegistryError(f"{name} v{version}: the card names no primary_metric; pass primary_metric=")
    mode = mode or _metric_mode(card, metric)
    new = _test_metric(card, metric)
    if champion is None:
        old, where = _test_metric(current_card, metric), "each on its own test split"
    elif champion.get("version") != current:
        reason = f"{alias} moved to v{current} after v{champion.get('version')} was scored"
        return Promotion(False, reason=reason, **base)
    elif not champion.get("comparable"):
        reason = f"{champion.get('reason')}; 'better' cannot be decided on different data: promote by hand if wanted"
        return Promotion(False, reason=reason, **base)
    else:
        old, where = float(champion[metric if "/" in metric else f"test/{metric}"]), "on the same test split"
    better = new > old if mode == "max" else new < old
    relation = ">" if new > old else "<" if new < old else "="
    reason = (
        f"test {metric} {new:.6g} {relation} {old:.6g} of v{current} {where}, "
        f"{'higher' if mode == 'max' else 'lower'} is better"
    )
    return Promotion(better, reason=reason, metric=metric, value=new, previous_value=old, **base)
