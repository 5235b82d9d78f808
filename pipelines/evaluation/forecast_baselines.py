"""A classical forecaster beside the networks: Holt-Winters exponential smoothing at the same horizon.

Fitted once on the training part of the series (additive trend; multiplicative or additive seasonality,
whichever has the lower AIC, multiplicative only for a positive series), then run with those parameters,
without refitting, over the whole series: its level, trend and season at each forecast origin depend on the
values up to that origin only, and give the forecast of the next H steps from there. Seconds, not minutes.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from pipelines.modalities.series.windows import series_from_windows

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


def exponential_smoothing(meta: dict, parts: dict[str, tuple[np.ndarray, np.ndarray]], inverse) -> dict[str, float]:
    """val/ and test/ rmse, mae and mase of Holt-Winters forecasts from the split's forecast origins."""
    x = np.concatenate([parts[s][0] for s in SPLITS])
    y = np.concatenate([parts[s][1].reshape(len(parts[s][1]), -1) for s in SPLITS])
    series = np.asarray(inverse(series_from_windows(x, y).astype(np.float64)), dtype=np.float64)
    window, season, horizon = meta["window"], meta["season_length"], y.shape[1]
    n_train = len(parts["train"][0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # statsmodels' convergence and initialization chatter
        fitted, seasonal = fit_training_part(series[: n_train - 1 + window + horizon], season)
        out: dict[str, float] = {}
        start = n_train
        for split in SPLITS[1:]:
            origins = np.arange(start, start + len(parts[split][0])) + window - 1
            start += len(origins)
            pred = forecasts_from_origins(series, fitted, seasonal, season, origins, horizon)
            err = pred - series[origins[:, None] + np.arange(1, horizon + 1)]
            mae = float(np.mean(np.abs(err)))
            out[f"{split}/rmse"] = float(np.sqrt(np.mean(err**2)))
            out[f"{split}/mae"] = mae
            out[f"{split}/mase"] = mae / meta["mase_scale"] if meta.get("mase_scale") else float("nan")
    return out
