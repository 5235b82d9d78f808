"""Column types of a user's table: inferred from the values, or set in params (ingest.columns); and the profile.

A feature column becomes one of
    number      float; standardized (log_number: sign(x)*log1p(|x|) first)
    binary      any two values; which one is 1 is recorded (yes/true/y/t/1/on/positive, else the later in sort order)
    category    strings (or a few numbers the user typed so); one-hot, or an embedding above prepare.max_onehot
    date        ISO-like dates (2024-03-01, 01/03/2024); expanded to year, month, day of week, day of year
    identifier  nearly every value a distinct string (a name, an id): dropped with a note, unless typed
    text        long strings of several words (free text): dropped with a note, unless typed
The rule that infers a type from a column's values, chunk by chunk, is `ingest_scan.decide_type`.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from pipelines.errors import PipelineInputError

KEPT = ("number", "log_number", "binary", "category", "date")
DROPPED = ("identifier", "text", "drop")
# Of two values, the one in this set is 1 (compared lowercased); otherwise the later one in sort order.
POSITIVE = {"1", "yes", "y", "true", "t", "on", "positive", "pos"}
IDENTIFIER_RATIO = 0.9  # distinct values / non-missing values at or above which strings are an identifier
IDENTIFIER_MIN_ROWS = 10  # ...in a column of at least this many values (a tiny table has few repeats)
TEXT_WORDS = 4  # mean words per value from which strings are free text
DATE = re.compile(r"^(\d{4}[-/.]\d{1,2}[-/.]\d{1,2}([ T]\d{1,2}:\d{2}(:\d{2})?)?|\d{1,2}[-/.]\d{1,2}[-/.]\d{4})$")
FLOAT32_MAX = float(np.finfo(np.float32).max)
PLAIN_NUMBERS = {float, int, bool, type(None)}  # what a number column's JSON values are (bool: 0/1, as pandas reads it)
NUMBER_KINDS = ("number", "log_number")


def canonical(value: Any) -> str:
    """A value as the string a category or binary level is known by: 3.0 and '3' are both '3'."""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def levels(values: pd.Series) -> pd.Series:
    """The non-missing values of a column as canonical strings (NaN stays NaN)."""
    kind = values.dtype
    if pd.api.types.is_bool_dtype(kind) or pd.api.types.is_numeric_dtype(kind) or isinstance(kind, pd.StringDtype):
        # One typed dtype: equal keys are equal levels, so each distinct value is made canonical once.
        uniques = values.dropna().unique()
        return values.map(pd.Series([canonical(u) for u in uniques], index=uniques, dtype=object))
    # Python objects (True and 1 are one key but two levels), categories, dates: each value mapped.
    return values.map(canonical, na_action="ignore")


def binary_positive(distinct: list[str]) -> str:
    """Which of two values is encoded as 1: the larger of two numbers, yes/true/... of two words, else the later."""
    numbers = pd.to_numeric(pd.Series(distinct), errors="coerce")
    if numbers.notna().all():
        return distinct[int(numbers.idxmax())]
    for value in sorted(distinct):
        if value.lower() in POSITIVE:
            return value
    return sorted(distinct)[1]


def _numbers(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """(values as floats, which non-missing values are not numbers)."""
    if pd.api.types.is_bool_dtype(values):
        values = values.astype("float64")
    if pd.api.types.is_numeric_dtype(values):  # nothing to parse: the common case, and the endpoint's per request
        return (values if values.dtype == np.float64 else values.astype(np.float64)), np.zeros(len(values), bool)
    converted = pd.to_numeric(values, errors="coerce")
    return converted.astype("float64"), (converted.isna() & values.notna()).to_numpy()


def row_number(values: pd.Series | list, position: int) -> int:
    """The 1-based data row of `values`' position: a chunk of a large table (or its training rows) keeps the
    table's row numbers as its index, so a message names the row of the file, not of the chunk. A plain list
    (a request's rows) counts from 1."""
    if isinstance(values, pd.Series) and pd.api.types.is_integer_dtype(values.index):
        return int(values.index[position]) + 1
    return position + 1


def not_a_number(src: str, col: str, values: pd.Series, bad: np.ndarray, why: str) -> PipelineInputError:
    row = int(np.asarray(bad).nonzero()[0][0])
    return PipelineInputError(
        f"{src}: column '{col}', row {row_number(values, row)}: {values.iloc[row]!r} is not a number ({why})"
    )


def as_series(values: pd.Series | list) -> pd.Series:
    return values if isinstance(values, pd.Series) else pd.Series(values)


def number_array(src: str, col: str, kind: str, values: pd.Series | list) -> np.ndarray:
    """A number column as float64, NaN where missing: `convert`'s result, for a Series or a plain list of values.

    A list of plain numbers and None (JSON rows taken apart by column, at the endpoint) goes straight through
    NumPy: no pandas Series per column, which cost more than the network for a one-row request. Anything else
    (strings to parse, a value out of float32's range) goes through `convert`, with its messages."""
    if isinstance(values, list) and set(map(type, values)) <= PLAIN_NUMBERS:
        try:
            x = np.array(values, np.float64)  # None -> NaN
        except OverflowError:  # an integer beyond float64: convert names it
            x = None
        if x is not None and (np.isnan(x) | (np.abs(x) <= FLOAT32_MAX)).all():
            return x
    return convert(src, col, kind, as_series(values)).to_numpy(np.float64)


def convert(src: str, col: str, kind: str, values: pd.Series) -> pd.Series:
    """A kept column in its stored form: floats for numbers, datetimes for dates, canonical strings otherwise."""
    if kind in ("number", "log_number"):
        numbers, bad = _numbers(values)
        if bad.any():
            raise not_a_number(src, col, values, bad, f"ingest.columns types it {kind}")
        x = numbers.to_numpy()  # numpy, not pandas, per element: a few microseconds instead of a few hundred
        finite = np.isnan(x) | (np.isfinite(x) & (np.abs(x) <= FLOAT32_MAX))
        if not finite.all():
            row = int((~finite).nonzero()[0][0])
            value = values.iloc[row]
            shown = repr(value) if isinstance(value, str) else str(float(value))
            raise PipelineInputError(
                f"{src}: column '{col}', row {row_number(values, row)}: {shown} is infinite or too large for float32 "
                f"(at most {FLOAT32_MAX:.4g}); fix or remove the value"
            )
        return numbers
    if kind == "date":
        dates = pd.to_datetime(values, errors="coerce", format="mixed")
        bad = dates.isna() & values.notna()
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise PipelineInputError(
                f"{src}: column '{col}', row {row_number(values, row)}: {values.iloc[row]!r} is not a date"
            )
        return dates
    out = levels(values).astype(object)
    return out.where(out.notna(), None)


def profile_lines(profile: list[dict[str, Any]]) -> list[str]:
    """The profile as aligned text lines for the log."""
    lines = [f"{'column':<24} {'type':<11} {'missing':>7} {'distinct':>8}  range / note"]
    for row in profile:
        span = f"{row['min']} .. {row['max']}" if row["min"] is not None else ""
        extra = "; ".join(x for x in (span, f"1 = {row['positive']!r}" if "positive" in row else "", row["note"]) if x)
        kind = row["type"] + ("*" if row["type_from"] == "params" else "")
        name = row["column"] + (" (label)" if row["role"] == "label" else "")
        lines.append(f"{name:<24} {kind:<11} {row['missing']:>7} {row['distinct']:>8}  {extra}")
    return lines
