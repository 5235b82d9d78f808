"""A classical forecaster beside the networks: Holt-Winters exponential smoothing at the same horizon.

Fitted once on the training part of the series (additive trend; multiplicative or additive seasonality,
whichever has the lower AIC, multiplicative only for a positive series), then run with those parameters,
without refitting, over the whole series: its level, trend and season at each forecast origin depend on the
values up to that origin only, and give the forecast of the next H steps from there. Seconds, not minutes.
The series is read back from the windows chunk by chunk (one value a window), never holding the windows whole.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from pipelines.handoffs.splits import SplitData, chunks_of

SPLITS = ("train", "val", "test")


def _model(values: np.ndarray, season: int, seasonal: str | None, **init: Any):
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    return ExponentialSmoothing(
        values, trend="add", seasonal=seasonal, seasonal_periods=season if seasonal else None, **init
    )


def fit_training_part(values: np.ndarray, season: int) -> tuple[Any, str | None]:
    """(fitted results, seasonality) of the best of the candidate models by AIC."""
    kinds: list[str | None] = []
    if season >= 2 and len(values) >= 2 * season + 2:
        kinds = (["mul"] if np.all(values > 0) else []) + ["add"]
    best = None
    for seasonal in kinds + [None]:
        try:
            result = _model(values, season, seasonal, initialization_method="estimated").fit()
        except (ValueError, np.linalg.LinAlgError):
            continue
        if np.isfinite(result.aic) and (best is None or result.aic < best[0].aic):
            best = (result, seasonal)
    if best is None:
        raise ValueError("exponential smoothing could not be fitted to the training part")
    return best


def forecasts_from_origins(
    series: np.ndarray, fitted: Any, seasonal: str | None, season: int, origins: np.ndarray, horizon: int
) -> np.ndarray:
    """(len(origins), horizon) forecasts; origin o is the index of the last value seen."""
    p = fitted.params
    init = {"initial_level": p["initial_level"], "initial_trend": p["initial_trend"]}
    smoothing = {"smoothing_level": p["smoothing_level"], "smoothing_trend": p["smoothing_trend"]}
    if seasonal:
        init["initial_seasonal"] = p["initial_seasons"]
        smoothing["smoothing_seasonal"] = p["smoothing_seasonal"]
    states = _model(series, season, seasonal, initialization_method="known", **init).fit(optimized=False, **smoothing)
    h = np.arange(1, horizon + 1)
    level, trend = states.level[origins, None], states.trend[origins, None]
    point = level + h * trend  # (n, horizon)
    if not seasonal:
        return point
    # The season of the same phase in the last season seen from the origin.
    phase = states.season[origins[:, None] + h - season * np.ceil(h / season).astype(int)]
    return point * phase if seasonal == "mul" else point + phase


def _series(parts: dict[str, SplitData]) -> tuple[np.ndarray, dict[str, int], int]:
    """The series back from the windows of every split, in order (windows.series_from_windows: the first window,
    each later window's last value, the last window's targets); the windows of each split; the horizon."""
    first, lasts, tail, counts = None, [], None, dict.fromkeys(SPLITS, 0)
    for split in SPLITS:
        for x, y in chunks_of(parts[split]):
            first = x[0].copy() if first is None else first  # copies: the chunk is let go
            lasts.append(x[:, -1].copy())
            tail = np.reshape(y[-1], -1).copy()
            counts[split] += len(x)
    return np.concatenate([first, np.concatenate(lasts)[1:], tail]), counts, len(tail)


def exponential_smoothing(meta: dict, parts: dict[str, SplitData], inverse) -> dict[str, float]:
    """val/ and test/ rmse, mae and mase of Holt-Winters forecasts from the split's forecast origins."""
    values, counts, horizon = _series(parts)
    series = np.asarray(inverse(values.astype(np.float64)), dtype=np.float64)
    window, season = meta["window"], meta["season_length"]
    n_train = counts["train"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels' convergence and initialization chatter
        fitted, seasonal = fit_training_part(series[: n_train - 1 + window + horizon], season)
        out: dict[str, float] = {}
        start = n_train
        for split in SPLITS[1:]:
            origins = np.arange(start, start + counts[split]) + window - 1
            start += len(origins)
            pred = forecasts_from_origins(series, fitted, seasonal, season, origins, horizon)
            err = pred - series[origins[:, None] + np.arange(1, horizon + 1)]
            mae = float(np.mean(np.abs(err)))
            out[f"{split}/rmse"] = float(np.sqrt(np.mean(err**2)))
            out[f"{split}/mae"] = mae
            out[f"{split}/mase"] = mae / meta["mase_scale"] if meta.get("mase_scale") else float("nan")
    return out
