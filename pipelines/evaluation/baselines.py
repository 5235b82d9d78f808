"""Classical baselines beside every neural candidate, scored exactly like the candidates.

A baseline is fitted on the same prepared (preprocessed) training arrays and scored on the same
val and test splits with the same scorer (pipelines/evaluation/scoring.py), so its numbers are
in the data's own units and comparable column for column with a candidate's. Every baseline
reports `{<name>: {"val/<metric>": ..., "test/<metric>": ...}}` (scalar metrics only); a task's
baselines are a list of functions in BASELINES, each returning any number of named entries, so
a new one (e.g. a forecast's exponential smoothing) slots in beside the others.

Whether any candidate beats each baseline is decided in comparison.py (no torch there: the flow reads it).

A split is read in chunks (`SplitChunks`; (x, y) arrays held in memory work too): val and test are scored
chunk by chunk like the candidates; the table baselines fit on at most TRAIN_ROWS training rows (all of them
below that, as before; above, a seeded sample); the unigram counts and the Holt-Winters series are read from
every training row, a few numbers per row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from models.class_weights import ClassWeighting, weights_for
from models.task_kinds import get_task
from pipelines.evaluation.metrics import unigram_perplexity_of_counts
from pipelines.evaluation.scoring import join_rows, rows_of, score_rows
from pipelines.handoffs import metric_key
from pipelines.handoffs.splits import Arrays, SplitData, chunks_of

# (dataset, prepared meta, {"train"|"val"|"test": split}) -> {baseline name: {`split/metric`: value}}
BaselineFn = Callable[[str, dict, dict[str, SplitData]], dict[str, dict[str, float]]]

# The table baselines fit on at most this many training rows (a seeded sample of them above it): a linear model
# and gradient boosting have long converged there, and the rows fit in memory (200k rows of 100 float64 features:
# 160 MB). Every built-in dataset is far below it, and fits on all its rows as before.
TRAIN_ROWS = 200_000


def training_rows(train: SplitData, seed: int, cap: int = TRAIN_ROWS) -> Arrays:
    """The training split in memory, in its order, when it has at most `cap` rows; else `cap` rows drawn
    uniformly (seeded), in the split's order, read chunk by chunk."""
    total = len(train[1]) if isinstance(train, tuple) else train.samples
    keep = None if total <= cap else np.sort(np.random.default_rng(seed).choice(total, cap, replace=False))
    xs, ys, start = [], [], 0
    for x, y in chunks_of(train):
        end = start + len(y)
        if keep is not None:
            mine = keep[np.searchsorted(keep, start) : np.searchsorted(keep, end)] - start
            x, y = x[mine], y[mine]
        xs.append(x)
        ys.append(y)
        start = end
    return np.concatenate(xs), np.concatenate(ys)


def _scalars(split: str, scores: dict[str, Any]) -> dict[str, float]:
    """The scalar metrics of one split as `split/metric` keys (per-class dicts left out, as in the comparison)."""
    return {
        metric_key(split, k): float(v)
        for k, v in scores.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def _scored(
    meta: dict, outputs: dict[str, Callable[[np.ndarray], torch.Tensor]], loss: str, splits: dict
) -> dict[str, dict[str, float]]:
    """Fitted models' val and test scores through the candidates' scorer (`outputs`: name -> x -> logits or
    values), every model on each chunk in one pass over the split."""
    scores: dict[str, dict[str, float]] = {name: {} for name in outputs}
    for split in ("val", "test"):
        parts: dict[str, list] = {name: [] for name in outputs}
        for x, y in chunks_of(splits[split]):
            for name, output in outputs.items():
                parts[name].append(rows_of(meta, output(x), loss, x, y))
        for name, rows in parts.items():
            split_scores, _ = score_rows(meta, join_rows(rows))
            scores[name].update(_scalars(split, split_scores))
    return scores


def _flat(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float64).reshape(len(x), -1)


def _classifiers(seed: int, class_weight: dict[int, float] | None = None) -> dict[str, Any]:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression

    return {
        "logistic_regression": LogisticRegression(max_iter=2000, random_state=seed, class_weight=class_weight),
        "hist_gradient_boosting": HistGradientBoostingClassifier(random_state=seed, class_weight=class_weight),
    }


def _regressors(seed: int) -> dict[str, Any]:
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import Ridge

    return {"ridge": Ridge(alpha=1.0), "hist_gradient_boosting": HistGradientBoostingRegressor(random_state=seed)}


# Below this many training rows the baselines fit on one OpenMP thread: on small tables the threads
# only contend (measured: breast_cancer's gradient boosting took 0.2 s on one thread, 6-17 s on two
# busy cores); on big tables they pay off.
SINGLE_THREAD_ROWS = 50_000


def table_baselines(
    dataset: str, meta: dict, splits: dict[str, SplitData], weighting: ClassWeighting = "none"
) -> dict[str, dict[str, float]]:
    """A linear model and histogram gradient boosting on the prepared table, seeded by the dataset's seed.

    weighting: balanced fits the classifiers with the candidates' class weights (the same numbers, from the same
    training rows), named `<baseline>_balanced`."""
    from threadpoolctl import threadpool_limits

    seed = int(meta.get("seed", 0))
    train = training_rows(splits["train"], seed)
    threads = 1 if len(train[0]) < SINGLE_THREAD_ROWS else None
    with threadpool_limits(limits=threads, user_api="openmp"):
        if weighting == "none":
            return _fit_tables(meta, train, splits)
        y_train = np.asarray(train[1]).reshape(-1).astype(np.int64)
        counts = np.bincount(y_train, minlength=len(meta["classes"])).tolist()
        weights = weights_for(weighting, counts) or [1.0] * len(counts)
        # scikit-learn takes weights for the classes it sees in y only.
        fitted = _fit_tables(meta, train, splits, {c: w for c, w in enumerate(weights) if counts[c]})
        return {f"{name}_{weighting}": scores for name, scores in fitted.items()}


def _fit_tables(
    meta: dict, train: Arrays, splits: dict[str, SplitData], class_weight: dict[int, float] | None = None
) -> dict[str, dict[str, float]]:
    x_train, y_train = train
    seed = int(meta.get("seed", 0))
    outputs: dict[str, Callable[[np.ndarray], torch.Tensor]] = {}
    if get_task(meta["task"]).real_valued:
        for name, model in _regressors(seed).items():
            model.fit(_flat(x_train), np.asarray(y_train, np.float64).reshape(-1))
            # Predictions are in the prepared scale (a standardized target, when it is one): the
            # scorer takes them back to the data's units with the preprocessor's inverse.
            outputs[name] = lambda x, m=model: torch.from_numpy(m.predict(_flat(x)))
        return _scored(meta, outputs, "mse", splits)
    n_classes = len(meta["classes"])
    for name, model in _classifiers(seed, class_weight).items():
        model.fit(_flat(x_train), np.asarray(y_train).reshape(-1))

        def log_probs(x: np.ndarray, m: Any = model) -> torch.Tensor:
            # Class probabilities as log-probabilities over every class (a class missing from the
            # training split gets probability 0): Softmax of them gives the probabilities back.
            probs = np.zeros((len(x), n_classes))
            probs[:, m.classes_.astype(int)] = m.predict_proba(_flat(x))
            return torch.from_numpy(np.log(np.clip(probs, 1e-12, None)))

        outputs[name] = log_probs
    return _scored(meta, outputs, "cce", splits)


def unigram_baseline(dataset: str, meta: dict, splits: dict[str, SplitData]) -> dict[str, dict[str, float]]:
    """The baseline a language model must beat: training word frequencies (add-one smoothed), counted over every
    training row chunk by chunk."""
    counts = sum(
        torch.bincount(torch.from_numpy(y).long().view(-1), minlength=meta["vocab_size"])
        for _, y in chunks_of(splits["train"])
    )

    def targets(split: str) -> torch.Tensor:
        return torch.from_numpy(np.concatenate([y.reshape(-1) for _, y in chunks_of(splits[split])]))

    return {
        "unigram": {
            metric_key(split, "perplexity"): unigram_perplexity_of_counts(counts, targets(split))
            for split in ("val", "test")
        }
    }


def forecast_baselines(dataset: str, meta: dict, splits: dict[str, SplitData]) -> dict[str, dict[str, float]]:
    """Holt-Winters at the same horizon, from the same val and test origins as the candidates."""
    from pipelines.evaluation.forecast_baselines import exponential_smoothing
    from pipelines.evaluation.scoring import inverse_of

    return {"exponential_smoothing": exponential_smoothing(meta, splits, inverse_of(meta))}


# Baselines computed from the data alone, per task. The forecast's naive and seasonal-naive
# errors are computed with the candidates' own scores (same windows); see scoring.py.
BASELINES: dict[str, list[BaselineFn]] = {
    "binary": [table_baselines],
    "multiclass": [table_baselines],
    "regression": [table_baselines],
    "next_word": [unigram_baseline],
    "forecast": [forecast_baselines],
}


# Baselines that can weigh classes as the candidates' loss does: fitted once more per weighting in use.
WEIGHTED_BASELINES: dict[str, list[Callable[..., dict[str, dict[str, float]]]]] = {
    "binary": [table_baselines],
    "multiclass": [table_baselines],
}


def compute_baselines(
    dataset: str, meta: dict, splits: dict[str, SplitData], weightings: Iterable[str] = ()
) -> dict[str, dict[str, float]]:
    """Every baseline of the dataset's task: {name: {`split/metric`: value}} (empty when the task has none).

    weightings: the class weightings the candidates trained with; the unweighted baselines are always there,
    and each other weighting adds the task's weighted ones (`logistic_regression_balanced`)."""
    out: dict[str, dict[str, float]] = {}
    for fit in BASELINES.get(meta["task"], []):
        out.update(fit(dataset, meta, splits))
    for weighting in sorted(set(weightings) - {"none"}):
        for fit in WEIGHTED_BASELINES.get(meta["task"], []):
            out.update(fit(dataset, meta, splits, weighting))
    return out
