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
    seen = values[: parts["train"][-1] + params.window + 1]
    mean = float(seen.mean()) if params.normalize else 0.0
    std = float(seen.std()) if params.normalize else 1.0
    std = std if std > 1e-8 else 1.0
    scaled = (values - mean) / std
    x = np.lib.stride_tricks.sliding_window_view(scaled[:-1], params.window)[:n_windows]
    y = scaled[params.window :].reshape(-1, 1)
    arrays = {
        name: (np.ascontiguousarray(x[idx], dtype=np.float32), y[idx].astype(np.float32)) for name, idx in parts.items()
    }
    meta = {
        "input_shape": [params.window],
        "window": params.window,
        "season_length": params.season_length,
        "normalization": {"mean": mean, "std": std},
        "classes": None,
    }
    return arrays, meta
