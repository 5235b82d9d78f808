"""The series' preprocessing object: one (log) transform and one mean/std, fitted on what training sees.

prepare, evaluate and predict share it. A "relative" transform is the same object: taking each window
relative to its last value happens inside the network (models.networks.RecurrentNet), so the prepared
arrays and this inverse stay global and evaluate can rebuild the series from the windows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines.errors import PipelineInputError
from pipelines.modalities.series.reading import infer_freq, parse_times
from pipelines.modalities.sources import fetched, read_table

LOG_TRANSFORMS = ("log", "log_relative")


class SeriesPreprocessor:
    """Fitted on the values the training windows see; forecasts are undone with it."""

    kind = "series"

    def __init__(
        self,
        window: int,
        season_length: int,
        mean: float = 0.0,
        std: float = 1.0,
        horizon: int = 1,
        transform: str = "standard",
        time_column: str | None = None,
        freq: str | None = None,
        column: str | None = None,
    ):
        self.window, self.season_length, self.mean, self.std = window, season_length, mean, std
        self.horizon, self.transform_name, self.time_column, self.freq = horizon, transform, time_column, freq
        self.column = column  # the value column of the training file (predict's default)

    @property
    def log(self) -> bool:
        return self.transform_name in LOG_TRANSFORMS

    def _base(self, values: np.ndarray, where: str = "") -> np.ndarray:
        if not self.log:
            return values
        bad = np.flatnonzero(~(values > 0))
        if len(bad):
            raise PipelineInputError(
                f"{where}prepare.transform: {self.transform_name} needs positive values; step {bad[0] + 1} is "
                f"{values[bad[0]]} (use transform standard or relative)"
            )
        return np.log(values.astype(np.float64))

    def fit(self, seen: np.ndarray, normalize: bool = True) -> SeriesPreprocessor:
        base = self._base(seen)
        self.mean = float(base.mean()) if normalize else 0.0
        std = float(base.std()) if normalize else 1.0
        self.std = std if std > 1e-8 else 1.0
        return self

    def transform(self, values: np.ndarray, where: str = "") -> np.ndarray:
        """`where` starts an error's message (the file a non-positive value came from)."""
        return ((self._base(values, where) - self.mean) / self.std).astype(np.float32)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """Scaled values (forecasts, targets, window inputs) back in the series' units."""
        values = y * self.std + self.mean
        return np.exp(values) if self.log else values

    @property
    def state(self) -> dict:
        return {
            "kind": self.kind,
            "window": self.window,
            "season_length": self.season_length,
            "mean": self.mean,
            "std": self.std,
            "horizon": self.horizon,
            "transform": self.transform_name,
            "time_column": self.time_column,
            "freq": self.freq,
            "column": self.column,
        }

    @classmethod
    def from_state(cls, state: dict) -> SeriesPreprocessor:
        known = ("horizon", "transform", "time_column", "freq", "column")
        extra = {k: state[k] for k in known if state.get(k) is not None}
        return cls(state["window"], state["season_length"], state["mean"], state["std"], **extra)

    def read_inputs(self, source: str, column: str | None = None) -> tuple[np.ndarray, pd.DataFrame]:
        """Horizon 1: every full window (the last one forecasts the step after the end), one row each.
        Horizon H: the last window, and one row per step of the H forecast past the end.
        `column`: the value column (default: the training file's, else `value`)."""
        with fetched(source) as local:
            table = read_table(local, source)
        return self.from_table(table, column or self.column or "value", source)

    def from_table(self, table: pd.DataFrame, column: str, source: str) -> tuple[np.ndarray, pd.DataFrame]:
        """A series' values (and timestamps, in the time column the model was trained with) -> windows and rows."""
        if column not in table.columns:
            raise PipelineInputError(
                f"{source}: column '{column}' not found (use --column); "
                f"columns are: {', '.join(map(str, table.columns))}"
            )
        values = pd.to_numeric(table[column], errors="coerce")
        if values.isna().any():
            raise PipelineInputError(
                f"{source}: row {int(values.isna().to_numpy().nonzero()[0][0]) + 1}: missing value "
                f"in '{column}' (fill or interpolate it first)"
            )
        w, n = self.window, len(values)
        if n < w:
            raise PipelineInputError(f"{source}: {n} values, fewer than the model's window of {w}")
        times = None
        if self.time_column and self.time_column in table.columns:
            times = parse_times(table[self.time_column], source, self.time_column)
        x = np.lib.stride_tricks.sliding_window_view(self.transform(values.to_numpy(np.float32), f"{source}: "), w)
        if self.horizon == 1:
            frame = pd.DataFrame({"forecast_for_step": np.arange(w, n + 1)})
            steps = frame["forecast_for_step"]
            frame["actual"] = [float(values.iloc[i]) if i < n else float("nan") for i in steps]
        else:
            x = x[-1:]  # (1, w): the forecast origin is the end of the series
            frame = pd.DataFrame({"horizon_step": np.arange(1, self.horizon + 1)})
            frame["forecast_for_step"] = n - 1 + frame["horizon_step"]
        if times is not None:
            future = _future(times, infer_freq(times) or self.freq, self.horizon)
            known = pd.Series(list(times) + list(future))
            frame.insert(0, "timestamp", known.iloc[frame["forecast_for_step"]].to_numpy())
        return np.array(x), frame  # a copy: a window view is read-only, and torch warns about those


def _future(times: pd.DatetimeIndex, freq: str | None, steps: int) -> list:
    """The timestamps of the `steps` values after the last one (NaT when the frequency is unknown)."""
    if freq is None:
        return [pd.NaT] * steps
    return list(pd.date_range(times[-1], periods=steps + 1, freq=freq)[1:])
