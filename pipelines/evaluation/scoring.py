"""Score one split of one candidate: the task's metrics on its point predictions, in the data's own units.

One scorer per task, in a table keyed like models.task_kinds.TASKS. Real-valued predictions are
taken back to the data's units with the dataset's preprocessing object (its `inverse`), the
same object predict uses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from models.tasks import predict
from pipelines.evaluation.metrics import classification_metrics, forecast_metrics, next_word_metrics, regression_metrics
from pipelines.handoffs import upgrade_meta


@dataclass
class Split:
    """A candidate's outputs on one split and what they are scored against."""

    meta: dict[str, Any]  # the prepared meta (current layout)
    logits: torch.Tensor
    point: torch.Tensor  # class index, word id or value, in the prepared scale
    x: np.ndarray | None
    y: np.ndarray
    inverse: Callable[[np.ndarray], np.ndarray]  # prepared scale -> the data's units


def _f64(*arrays: np.ndarray) -> list[torch.Tensor]:
    return [torch.from_numpy(np.asarray(a, np.float64)) for a in arrays]


def _values(s: Split) -> tuple[dict, np.ndarray]:
    pred, true = s.inverse(s.point.numpy()), s.inverse(s.y.reshape(-1))
    return regression_metrics(*_f64(pred, true)), pred


def _forecast(s: Split) -> tuple[dict, np.ndarray]:
    """Horizon H: (n, H) forecasts beside naive (the last value, repeated) and seasonal naive (the last season,
    repeated) from the same origins; one step: (n,) as before."""
    from pipelines.modalities.series.windows import seasonal_positions

    n, window, season = len(s.y), s.meta["window"], s.meta["season_length"]
    horizon = s.y.reshape(n, -1).shape[1]
    pred, true = s.inverse(s.point.numpy()), s.inverse(s.y.reshape(n, -1))
    last = np.repeat(s.inverse(s.x[:, -1:]), horizon, axis=1)
    seasonal = s.inverse(s.x[:, seasonal_positions(window, season, horizon)])
    if horizon == 1:
        true, last, seasonal = true[:, 0], last[:, 0], seasonal[:, 0]
    return forecast_metrics(*_f64(pred, true, last, seasonal), mase_scale=s.meta.get("mase_scale")), pred


def _classes(s: Split) -> tuple[dict, np.ndarray]:
    classes = s.meta["classes"]
    return classification_metrics(s.point, torch.from_numpy(s.y), len(classes), classes), s.point.numpy()


def _next_word(s: Split) -> tuple[dict, np.ndarray]:
    return next_word_metrics(s.logits, torch.from_numpy(s.y)), s.point.numpy()


SCORERS: dict[str, Callable[[Split], tuple[dict, np.ndarray]]] = {
    "regression": _values,
    "forecast": _forecast,
    "binary": _classes,
    "multiclass": _classes,
    "next_word": _next_word,
}


def _identity(values: np.ndarray) -> np.ndarray:
    return values


def inverse_of(meta: dict[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
    """The preprocessing's inverse for a meta of any version (identity where nothing was fitted)."""
    from pipelines.modalities import preprocessor_from_state

    state = meta.get("preprocessing")
    return preprocessor_from_state(state).inverse if state else _identity


def score(meta: dict, logits: torch.Tensor, loss: str, x: np.ndarray | None, y: np.ndarray) -> tuple[dict, np.ndarray]:
    """Metrics of one split for the dataset's task, and the point predictions (in the data's units) behind them."""
    meta = upgrade_meta(dict(meta))
    task = meta["task"]
    point = predict(logits, task, loss)[0]
    return SCORERS[task](Split(meta, logits, point, x, y, inverse_of(meta)))
