"""Reading a series: built-in sources, a CSV/Parquet value column, an optional time column, missing values.

Raw form: series.parquet with a `value` column in time order, and a `time` column when the source has
timestamps (a built-in series with dates, or ingest.time_column).
"""

from __future__ import annotations

import hashlib
import importlib
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.config import IngestParams
from pipelines.errors import PipelineInputError
from pipelines.modalities.sources import fetched, read_table

RAW_SERIES = "series.parquet"
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
Loaded = tuple[pd.Series, pd.DatetimeIndex | None]


def _data(module: str) -> pd.DataFrame:
    return importlib.import_module(f"statsmodels.datasets.{module}").load_pandas().data


def _column(module: str, column: str) -> Callable[[], Loaded]:
    return lambda: (_data(module)[column].astype("float64").reset_index(drop=True), None)


def _co2(monthly: bool) -> Loaded:
    co2 = _data("co2")["co2"].astype("float64")
    if monthly:  # weekly with gaps -> monthly means (a month with no measurement stays missing)
        co2 = co2.resample("MS").mean()
    return co2.reset_index(drop=True), pd.DatetimeIndex(co2.index)


def _elnino() -> Loaded:
    wide = _data("elnino")  # one row per year, one column per month
    values = wide[list(MONTHS)].to_numpy(dtype="float64").reshape(-1)
    start = pd.Timestamp(year=int(wide["YEAR"].iloc[0]), month=1, day=1)
    return pd.Series(values), pd.date_range(start, periods=len(values), freq="MS")


# statsmodels ships these real series with its wheel (no download).
STATSMODELS_SERIES: dict[str, Callable[[], Loaded]] = {
    "sunspots": _column("sunspots", "SUNACTIVITY"),  # yearly 1700-2008
    "co2": lambda: _co2(monthly=False),  # weekly Mauna Loa CO2 1958-2001, with gaps
    "co2_monthly": lambda: _co2(monthly=True),  # the same as monthly means: trend + yearly season, 5 gaps
    "elnino": _elnino,  # monthly sea surface temperature 1950-2010: yearly season, no trend
    "nile": _column("nile", "volume"),  # yearly Nile flow 1871-1970
}


def parse_times(raw: pd.Series, source: str, column: str) -> pd.DatetimeIndex:
    """A time column as datetimes, strictly increasing; refuses a bad, missing, repeated or earlier one, naming it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "could not infer format": parsed element by element
        times = pd.to_datetime(raw, errors="coerce")
    for row in np.flatnonzero(times.isna().to_numpy()):
        what = "missing" if pd.isna(raw.iloc[row]) else f"{raw.iloc[row]!r} is not a date/time"
        raise PipelineInputError(f"{source}: time column '{column}', row {row + 1}: {what}")
    stamps = times.to_numpy()
    steps = np.diff(stamps)
    for row in np.flatnonzero(steps <= np.timedelta64(0)) + 1:
        if stamps[row] == stamps[row - 1]:
            why = f"{raw.iloc[row]} repeats row {row} (one value per timestamp)"
        else:
            why = f"{raw.iloc[row]} is earlier than row {row} ({raw.iloc[row - 1]}); sort the file by time"
        raise PipelineInputError(f"{source}: time column '{column}', row {row + 1}: {why}")
    return pd.DatetimeIndex(times)


def infer_freq(times: pd.DatetimeIndex | None) -> str | None:
    """pandas' frequency string of evenly spaced timestamps ('MS', 'W-SAT', 'D'), or None (irregular, too few)."""
    if times is None or len(times) < 3:
        return None
    freq = pd.infer_freq(times)
    return getattr(freq, "freqstr", freq)  # pandas may return an offset object instead of a string


def load_source(params: IngestParams) -> tuple[pd.Series, pd.DatetimeIndex | None, dict]:
    """(values, timestamps or None, what was read)."""
    source = params.source
    if source.startswith("statsmodels:"):
        name = source.split(":", 1)[1]
        if name not in STATSMODELS_SERIES:
            raise PipelineInputError(
                f"ingest.source: {source}: unknown built-in series; choose one of "
                + ", ".join(f"statsmodels:{n}" for n in STATSMODELS_SERIES)
            )
        values, times = STATSMODELS_SERIES[name]()
        return values, times, {"kind": "statsmodels"}
    with fetched(source) as local:
        digest = hashlib.sha256(local.read_bytes()).hexdigest()
        table = read_table(local, source)
    wanted = [("value column", params.column, "ingest.column")]
    if params.time_column:
        wanted.append(("time column", params.time_column, "ingest.time_column"))
    for what, name, key in wanted:
        if name not in table.columns:
            raise PipelineInputError(
                f"{source}: {what} '{name}' ({key}) not found; columns are: {', '.join(map(str, table.columns))}"
            )
    times = parse_times(table[params.time_column], source, params.time_column) if params.time_column else None
    values = pd.to_numeric(table[params.column], errors="coerce")
    bad = values.isna() & table[params.column].notna()
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise PipelineInputError(
            f"{source}: column '{params.column}', row {row + 1}: {table[params.column].iloc[row]!r} is not a number"
        )
    return values.astype("float64").reset_index(drop=True), times, {"kind": "file", "sha256": digest}


def handle_missing(values: pd.Series, params: IngestParams) -> tuple[pd.Series, int]:
    """Apply ingest.missing; return the series (its index: the rows kept) and how many values were missing."""
    missing = values.isna() | ~np.isfinite(values.fillna(0))
    n = int(missing.sum())
    if n == 0:
        return values, 0
    if n == len(values):
        raise PipelineInputError(
            f"{params.source}: all {n} values of the series are missing (or not finite); nothing to forecast"
        )
    values = values.mask(missing)
    if params.missing == "error":
        row = int(missing.to_numpy().nonzero()[0][0])
        raise PipelineInputError(
            f"{params.source}: row {row + 1}: missing value "
            f"({n} missing in all; set ingest.missing to interpolate or drop)"
        )
    if params.missing == "drop":
        return values.dropna(), n
    # Linear interpolation between neighbours; gaps at either end take the nearest value.
    return values.interpolate(method="linear", limit_direction="both"), n


def ingest(params: IngestParams, out_dir: Path) -> dict:
    values, times, info = load_source(params)
    values, n_missing = handle_missing(values, params)
    if len(values) < 10:
        raise PipelineInputError(f"{params.source}: {len(values)} values are too few for a forecasting series")
    frame = pd.DataFrame({"value": values.to_numpy().astype("float32")})
    if times is not None:
        times = pd.DatetimeIndex(times[values.index])  # the rows kept
        frame["time"] = times
    freq = infer_freq(times)
    frame.to_parquet(out_dir / RAW_SERIES, index=False)
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
    if times is not None:
        info.update(start=str(times[0]), end=str(times[-1]), freq=freq)
        info["summary"] += f", {times[0]} to {times[-1]}, frequency {freq or 'irregular (not inferred)'}"
    return info
