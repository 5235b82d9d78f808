"""What a table column contributes before scaling: its dense entries (numbers, log numbers, binary, date
parts), the width of a category's embedding, and a regression target's values as its statistics see them.
Shared by the preprocessing's fit (`encoding.TablePreprocessor`) and the chunked prepare (`prepare.py`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from pipelines.errors import PipelineInputError

DATE_PARTS = ("year", "month", "dayofweek", "dayofyear")


def embedding_dim(cardinality: int) -> int:
    """fastai's rule of thumb, capped small: tables rarely need wide embeddings."""
    return int(min(16, max(2, round(1.6 * cardinality**0.56))))


def dense_entries(spec: dict[str, Any], values: pd.Series | np.ndarray) -> np.ndarray:
    """The column's dense entries before filling (NaN where missing): (rows, width) float64. A number column
    may come as a float array (`columns.number_array`)."""
    kind = spec["type"]
    if kind in ("number", "log_number"):
        x = np.asarray(values, np.float64)
        x = np.sign(x) * np.log1p(np.abs(x)) if kind == "log_number" else x
        return x.reshape(-1, 1)
    if kind == "binary":
        x = np.where(values == spec["positive"], 1.0, np.where(values == spec["negative"], 0.0, np.nan))
        return x.reshape(-1, 1)  # a third value (at predict) counts as missing
    dates = values.dt
    parts = [dates.year, dates.month, dates.dayofweek, dates.dayofyear]
    return np.column_stack([p.to_numpy(np.float64, na_value=np.nan) for p in parts])


def target_values(y: np.ndarray, scaling: str) -> np.ndarray:
    """Regression labels as the target's statistics see them (log1p first for `log`)."""
    y = np.asarray(y, np.float64)
    if scaling == "log":
        if (y <= -1).any():
            raise PipelineInputError("prepare.target_scaling: log needs label values above -1")
        y = np.log1p(y)
    return y
