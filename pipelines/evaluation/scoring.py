"""Score one split of one candidate: the task's metrics on its point predictions, in the data's own units.

One scorer per task, in a table keyed like models.task_kinds.TASKS. Real-valued predictions are
taken back to the data's units with the dataset's preprocessing object (its `inverse`), the
same object predict uses.

A split is scored in chunks (`score_chunks`): of each chunk only what the scorer reads is kept (`Rows`: the
point predictions and targets; a forecast's last and seasonal input values; a next word's target probability
and hits), never the inputs or a vocabulary-wide logit row, and the joined rows are scored once, to the same
floats as a whole split.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from models.tasks import predict
from pipelines.evaluation.metrics import (
    classification_metrics,
    forecast_metrics,
    next_word_rows,
    next_word_scores,
    regression_metrics,
)
from pipelines.handoffs import upgrade_meta


@dataclass
class Rows:
    """What a task's scorer reads of a split, row by row (a chunk's, or every chunk's joined)."""

    point: torch.Tensor  # class index, word id or value, in the prepared scale
    y: np.ndarray
    inputs: np.ndarray | None = None  # forecast: each window's last value, then its seasonal-naive values
    words: torch.Tensor | None = None  # next word: metrics.next_word_rows


@dataclass
class Split:
    """A candidate's outputs on one split and what they are scored against."""

    meta: dict[str, Any]  # the prepared meta (current layout)
    rows: Rows
    inverse: Callable[[np.ndarray], np.ndarray]  # prepared scale -> the data's units


def _f64(*arrays: np.ndarray) -> list[torch.Tensor]:
    return [torch.from_numpy(np.asarray(a, np.float64)) for a in arrays]


def _values(s: Split) -> tuple[dict, np.ndarray]:
    pred, true = s.inverse(s.rows.point.numpy()), s.inverse(s.rows.y.reshape(-1))
    return regression_metrics(*_f64(pred, true)), pred


def _forecast_inputs(meta: dict, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The inputs the naive forecasts take, per window: its last value, then the seasonal-naive value of each step."""
    from pipelines.modalities.series.windows import seasonal_positions

    horizon = y.reshape(len(y), -1).shape[1]
    return np.concatenate([x[:, -1:], x[:, seasonal_positions(meta["window"], meta["season_length"], horizon)]], 1)


def _forecast(s: Split) -> tuple[dict, np.ndarray]:
    """Horizon H: (n, H) forecasts beside naive (the last value, repeated) and seasonal naive (the last season,
    repeated) from the same origins; one step: (n,) as before."""
    n = len(s.rows.y)
    horizon = s.rows.y.reshape(n, -1).shape[1]
    pred, true = s.inverse(s.rows.point.numpy()), s.inverse(s.rows.y.reshape(n, -1))
    last = np.repeat(s.inverse(s.rows.inputs[:, :1]), horizon, axis=1)
    seasonal = s.inverse(s.rows.inputs[:, 1:])
    if horizon == 1:
        true, last, seasonal = true[:, 0], last[:, 0], seasonal[:, 0]
    return forecast_metrics(*_f64(pred, true, last, seasonal), mase_scale=s.meta.get("mase_scale")), pred


def _classes(s: Split) -> tuple[dict, np.ndarray]:
    classes = s.meta["classes"]
    return classification_metrics(s.rows.point, torch.from_numpy(s.rows.y), len(classes), classes), s.rows.point.numpy()


def _next_word(s: Split) -> tuple[dict, np.ndarray]:
    return next_word_scores(s.rows.words), s.rows.point.numpy()


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


def rows_of(meta: dict, logits: torch.Tensor, loss: str, x: np.ndarray | None, y: np.ndarray) -> Rows:
    """What the task's scorer keeps of a chunk of outputs (`meta`: the current layout, `upgrade_meta`)."""
    task = meta["task"]
    rows = Rows(predict(logits, task, loss)[0], y)
    if task == "forecast":
        rows.inputs = _forecast_inputs(meta, x, y)
    elif task == "next_word":
        rows.words = next_word_rows(logits, torch.from_numpy(y))
    return rows


def join_rows(parts: list[Rows]) -> Rows:
    def cat(values: list) -> Any:
        if values[0] is None:
            return None
        return torch.cat(values) if isinstance(values[0], torch.Tensor) else np.concatenate(values)

    return Rows(*(cat([getattr(p, f) for p in parts]) for f in ("point", "y", "inputs", "words")))


def score_rows(meta: dict, rows: Rows) -> tuple[dict, np.ndarray]:
    """Metrics of one split for the dataset's task, and the point predictions (in the data's units) behind them."""
    meta = upgrade_meta(dict(meta))
    return SCORERS[meta["task"]](Split(meta, rows, inverse_of(meta)))


def score(meta: dict, logits: torch.Tensor, loss: str, x: np.ndarray | None, y: np.ndarray) -> tuple[dict, np.ndarray]:
    """score_rows of a split held whole."""
    return score_rows(meta, rows_of(upgrade_meta(dict(meta)), logits, loss, x, y))


@torch.no_grad()
def score_chunks(
    meta: dict, net: Callable[[torch.Tensor], torch.Tensor], loss: str, chunks: Iterable[tuple], batch_size: int
) -> tuple[dict, np.ndarray, Rows, np.ndarray]:
    """(metrics, point predictions, the rows they came from, the last input row) of a split read in (x, y) chunks.

    Memory: a chunk, one batch's outputs, and the rows kept. Chunks of whole batches give the floats of a
    whole-split run: the network sees the same batches (a float32 matmul's rounding depends on the batch's
    shape), and everything after is row by row or on the joined rows."""
    meta = upgrade_meta(dict(meta))
    parts, last = [], None
    for x, y in chunks:
        for start in range(0, len(x), batch_size):
            xb, yb = x[start : start + batch_size], y[start : start + batch_size]
            parts.append(rows_of(meta, net(torch.from_numpy(xb)), loss, xb, yb))
        last = x[-1:].copy()  # not a view: the chunk's inputs are let go
    rows = join_rows(parts)
    scores, pred = score_rows(meta, rows)
    return scores, pred, rows, last
