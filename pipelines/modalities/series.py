"""Numeric series for forecasting with the LSTM/GRU: sliding windows, the last `window` steps predict the next.

Raw form: series.parquet with one `value` column in time order. Missing values
are handled explicitly (ingest.missing): refused, dropped, or linearly interpolated.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.config import IngestParams, PrepareParams
from pipelines.errors import PipelineInputError
from pipelines.modalities.common import chronological_split
from pipelines.modalities.sources import fetched, read_table

RAW_SERIES = "series.parquet"
# statsmodels ships these real series with its wheel (no download).
STATSMODELS_SERIES = {
    "sunspots": ("sunspots", "SUNACTIVITY", "YEAR"),  # yearly 1700-2008
    "co2": ("co2", "co2", None),  # weekly Mauna Loa CO2 1958-2001, with gaps
    "nile": ("nile", "volume", "year"),  # yearly Nile flow 1871-1970
}


def load_source(params: IngestParams) -> tuple[pd.Series, dict]:
    source = params.source
    if source.startswith("statsmodels:"):
        name = source.split(":", 1)[1]
        if name not in STATSMODELS_SERIES:
            raise PipelineInputError(
                f"ingest.source: {source}: unknown built-in series; choose one of "
                + ", ".join(f"statsmodels:{n}" for n in STATSMODELS_SERIES)
            )
        import importlib

        module, column, _ = STATSMODELS_SERIES[name]
        frame = importlib.import_module(f"statsmodels.datasets.{module}").load_pandas().data
        return frame[column].astype("float64").reset_index(drop=True), {"kind": "statsmodels"}
    with fetched(source) as local:
        digest = hashlib.sha256(local.read_bytes()).hexdigest()
        table = read_table(local, source)
    if params.column not in table.columns:
        raise PipelineInputError(
            f"{source}: value column '{params.column}' (ingest.column) not found; "
            f"columns are: {', '.join(map(str, table.columns))}"
        )
    values = pd.to_numeric(table[params.column], errors="coerce")
    bad = values.isna() & table[params.column].notna()
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise PipelineInputError(
            f"{source}: column '{params.column}', row {row + 1}: {table[params.column].iloc[row]!r} is not a number"
        )
    return values.astype("float64"), {"kind": "file", "sha256": digest}


def handle_missing(values: pd.Series, params: IngestParams) -> tuple[pd.Series, int]:
    """Apply ingest.missing; return the series and how many values were missing."""
    missing = values.isna() | ~np.isfinite(values.fillna(0))
    n = int(missing.sum())
    if n == 0:
        return values, 0
    values = values.mask(missing)
    if params.missing == "error":
        row = int(missing.to_numpy().nonzero()[0][0])
        raise PipelineInputError(
            f"{params.source}: row {row + 1}: missing value "
            f"({n} missing in all; set ingest.missing to interpolate or drop)"
        )
    if params.missing == "drop":
        return values.dropna().reset_index(drop=True), n
    # Linear interpolation between neighbours; gaps at either end take the nearest value.
    return values.interpolate(method="linear", limit_direction="both"), n


def ingest(params: IngestParams, out_dir: Path) -> dict:
    values, info = load_source(params)
    values, n_missing = handle_missing(values, params)
    if len(values) < 10:
        raise PipelineInputError(f"{params.source}: {len(values)} values are too few for a forecasting series")
    pd.DataFrame({"value": values.astype("float32")}).to_parquet(out_dir / RAW_SERIES, index=False)
    info.update(
        source=params.source,
        length=int(len(values)),
        missing=n_missing,
        missing_policy=params.missing,
        task="forecast",
        summary=(
            f"{len(values)} steps ({n_missing} missing values, {params.missing if n_missing else 'none to handle'})"
        ),
    )
    return info


def prepare(raw_dir: Path, ingest: IngestParams, params: PrepareParams, info: dict) -> tuple[dict, dict]:
    values = pd.read_parquet(raw_dir / RAW_SERIES)["value"].to_numpy(dtype=np.float32)
    n_windows = len(values) - params.window
    if n_windows < 3:
        raise PipelineInputError(
            f"prepare.window: {params.window} leaves {max(n_windows, 0)} windows of a {len(values)}-step series; "
            "use a shorter window"
        )
    parts = chronological_split(n_windows, params, "windows")
    # Statistics from the values the training windows can see (inputs and targets) only.
    prep = SeriesPreprocessor(params.window, params.season_length)
    prep.fit(values[: parts["train"][-1] + params.window + 1], params.normalize)
    scaled = prep.transform(values)
    x = np.lib.stride_tricks.sliding_window_view(scaled[:-1], params.window)[:n_windows]
    y = scaled[params.window :].reshape(-1, 1)
    arrays = {
        name: (np.ascontiguousarray(x[idx], dtype=np.float32), y[idx].astype(np.float32)) for name, idx in parts.items()
    }
    meta = {
        "input_shape": [params.window],
        "window": params.window,
        "season_length": params.season_length,
        "preprocessing": prep.state,
        "classes": None,
    }
    return arrays, meta


class SeriesPreprocessor:
    """One mean/std for the whole series, fitted on what the training windows see; forecasts are undone with it."""

    kind = "series"

    def __init__(self, window: int, season_length: int, mean: float = 0.0, std: float = 1.0):
        self.window, self.season_length, self.mean, self.std = window, season_length, mean, std

    def fit(self, seen: np.ndarray, normalize: bool = True) -> SeriesPreprocessor:
        self.mean = float(seen.mean()) if normalize else 0.0
        std = float(seen.std()) if normalize else 1.0
        self.std = std if std > 1e-8 else 1.0
        return self

    def transform(self, values: np.ndarray) -> np.ndarray:
        return ((values - self.mean) / self.std).astype(np.float32)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """Scaled values (forecasts, targets, window inputs) back in the series' units."""
        return y * self.std + self.mean

    @property
    def state(self) -> dict:
        return {
            "kind": self.kind,
            "window": self.window,
            "season_length": self.season_length,
            "mean": self.mean,
            "std": self.std,
        }

    @classmethod
    def from_state(cls, state: dict) -> SeriesPreprocessor:
        return cls(state["window"], state["season_length"], state["mean"], state["std"])

    def read_inputs(self, source: str, column: str | None = "value") -> tuple[np.ndarray, pd.DataFrame]:
        """Every full window of a user's series; the last one forecasts the step after the end."""
        column = column or "value"
        with fetched(source) as local:
            table = read_table(local, source)
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
        w = self.window
        if len(values) < w:
            raise PipelineInputError(f"{source}: {len(values)} values, fewer than the model's window of {w}")
        x = np.lib.stride_tricks.sliding_window_view(self.transform(values.to_numpy(np.float32)), w)
        frame = pd.DataFrame({"forecast_for_step": np.arange(w, len(values) + 1)})
        steps = frame["forecast_for_step"]
        frame["actual"] = [float(values.iloc[i]) if i < len(values) else float("nan") for i in steps]
        return np.ascontiguousarray(x), frame
