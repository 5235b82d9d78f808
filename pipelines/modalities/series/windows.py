"""Sliding windows of a series: inputs are `window` steps, targets the next `horizon` steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.config import IngestParams, PrepareParams
from pipelines.errors import PipelineInputError
from pipelines.handoffs.splits import SplitWriter
from pipelines.modalities.common import chronological_split
from pipelines.modalities.series.preprocess import SeriesPreprocessor
from pipelines.modalities.series.reading import RAW_SERIES, infer_freq

RELATIVE_TRANSFORMS = ("relative", "log_relative")
# Windows are written this many bytes of samples at a time: each step of the series is in `window + horizon` of
# them, so prepare holds the series (4 bytes a step, twice: raw and scaled) and one chunk, never every window.
CHUNK_BYTES = 16 * 2**20


def windows(scaled: np.ndarray, window: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """(x (n, window), y (n, horizon)) of every origin with a full window before it and a full horizon after."""
    n = len(scaled) - window - horizon + 1
    x = np.lib.stride_tricks.sliding_window_view(scaled, window)[:n]
    y = np.lib.stride_tricks.sliding_window_view(scaled[window:], horizon)[:n]
    return x, y


def series_from_windows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The series back from consecutive windows (all splits in order): the first window, each later
    window's last value, then the last window's targets. Window i starts at step i."""
    return np.concatenate([x[0], x[1:, -1], y[-1]])


def seasonal_positions(window: int, season: int, horizon: int) -> np.ndarray:
    """Seasonal naive: the window positions of the value one season before each horizon step, repeated per season
    (step h takes the last season's value at the same phase: h - season * ceil(h / season) steps after the origin)."""
    h = np.arange(1, horizon + 1)
    return window - 1 + h - season * np.ceil(h / season).astype(int)


def seasonal_naive_scale(values: np.ndarray, season: int) -> float | None:
    """MASE's denominator: the in-sample seasonal-naive MAE of the training part (None when it is 0 or too short)."""
    if len(values) <= season:
        return None
    scale = float(np.mean(np.abs(values[season:].astype(np.float64) - values[:-season])))
    return scale if scale > 0 else None


def prepare(raw_dir: Path, ingest: IngestParams, params: PrepareParams, info: dict, out: Path) -> dict:
    raw = pd.read_parquet(raw_dir / RAW_SERIES)
    values = raw["value"].to_numpy(dtype=np.float32)
    window, horizon = params.window, params.horizon
    n_windows = len(values) - window - horizon + 1
    if n_windows < 3:
        raise PipelineInputError(
            f"prepare.window: {window} and prepare.horizon: {horizon} leave {max(n_windows, 0)} windows of a "
            f"{len(values)}-step series; use a shorter window or horizon"
        )
    parts = chronological_split(n_windows, params, "windows")
    times = pd.DatetimeIndex(raw["time"]) if "time" in raw.columns else None
    freq = infer_freq(times)
    # Statistics from the values the training windows can see (inputs and targets) only.
    seen = values[: parts["train"][-1] + window + horizon]
    prep = SeriesPreprocessor(window, params.season_length, horizon=horizon, transform=params.transform)
    prep.time_column, prep.freq, prep.column = (
        getattr(ingest, "time_column", None),
        freq,
        getattr(ingest, "column", None),
    )
    prep.fit(seen, params.normalize)
    x, y = windows(prep.transform(values), window, horizon)  # views of the scaled series: nothing copied yet
    per_chunk = max(1, CHUNK_BYTES // (4 * (window + horizon)))
    for name, idx in parts.items():  # each split a range of consecutive windows, copied a chunk at a time
        with SplitWriter(out / name) as writer:
            for start in range(idx.start, idx.stop, per_chunk):
                stop = min(start + per_chunk, idx.stop)
                writer.write(np.ascontiguousarray(x[start:stop]), np.ascontiguousarray(y[start:stop]))
    meta = {
        "input_shape": [window],
        "window": window,
        "season_length": params.season_length,
        "horizon": horizon,
        "transform": params.transform,
        "relative": params.transform in RELATIVE_TRANSFORMS,
        "mase_scale": seasonal_naive_scale(seen, params.season_length),
        "freq": freq,
        "start": str(times[0]) if times is not None else None,
        "preprocessing": prep.state,
        "classes": None,
    }
    return meta
