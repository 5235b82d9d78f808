"""The forecast of a whole horizon from the last test origin, beside the actuals and the naive forecasts."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from pipelines.modalities.series.windows import seasonal_positions


def step_times(meta: dict, steps: np.ndarray) -> pd.DatetimeIndex | None:
    """Timestamps of series steps (0 = the first value), when the series had evenly spaced ones."""
    if not meta.get("start") or not meta.get("freq"):
        return None
    return pd.date_range(meta["start"], periods=int(steps.max()) + 1, freq=meta["freq"])[steps]


def horizon_frame(
    meta: dict, pred: np.ndarray, x: np.ndarray, y: np.ndarray, inverse: Callable[[np.ndarray], np.ndarray]
) -> pd.DataFrame:
    """One row per step of the last test window's horizon: its step in the series (and timestamp), the actual
    value, the forecast, and the naive and seasonal-naive forecasts from the same origin (series units).

    pred: (n_test, H) forecasts in the series' units; x, y: the prepared test windows and targets."""
    horizon = pred.shape[1]
    origin = sum(meta["sizes"].values()) - 1 + meta["window"] - 1  # the last value the last window sees
    steps = origin + np.arange(1, horizon + 1)
    history = inverse(x[-1])
    frame = pd.DataFrame(
        {
            "step": steps,
            "horizon_step": np.arange(1, horizon + 1),
            "actual": inverse(y[-1].reshape(-1)),
            "predicted": pred[-1],
            "naive_last": np.repeat(history[-1], horizon),
            "seasonal_naive": history[seasonal_positions(meta["window"], meta["season_length"], horizon)],
        }
    )
    times = step_times(meta, steps)
    if times is not None:
        frame.insert(1, "timestamp", times)
    return frame
