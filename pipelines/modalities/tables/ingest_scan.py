"""What ingest learns of a table chunk by chunk, so that a table larger than memory is typed and profiled in
two passes over its rows, to the same result as the whole table in one piece.

- `Distinct`: how many distinct values a column has: exact up to `SKETCH_VALUES` of them, beyond that an
  estimate (the K-minimum-values sketch of 64-bit hashes, ~0.4 % error), in bounded memory.
- `TypeEvidence`: what `decide_type` needs to type a feature column (the types are listed in `columns.py`).
- `MissingPatterns`: which columns are missing together, with each pattern's first row, row count and the
  label's values in those rows, so ingest.missing (error / drop / fill) and the label's task are decided
  after the first pass, before anything is written.
- `ProfileStats`: a profile row (type, missing, distinct, range) of the stored values, merged over chunks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipelines.errors import PipelineInputError
from pipelines.modalities.tables.columns import (
    DATE,
    IDENTIFIER_MIN_ROWS,
    IDENTIFIER_RATIO,
    TEXT_WORDS,
    _numbers,
    binary_positive,
    levels,
    row_number,
)

SKETCH_VALUES = 1 << 16  # distinct values counted exactly per column: 512 KiB of hashes at most
FEW = 3  # actual values kept per column: enough to name a binary column's two values, or see a third
LABEL_VALUES = 64  # distinct label values kept per missing pattern: a task needs 21 at most (MAX_CLASSES_FOR_AUTO)


class Distinct:
    """Distinct values of a column seen so far, from their 64-bit hashes: the smallest SKETCH_VALUES hashes."""

    def __init__(self) -> None:
        self.hashes = np.empty(0, np.uint64)

    def add(self, present: pd.Series) -> None:
        """Present values, counted as `columns.levels` tells them apart (datetimes as instants)."""
        if not len(present):
            return
        if pd.api.types.is_datetime64_any_dtype(present):
            hashed = pd.util.hash_array(present.to_numpy().view(np.int64))
        elif pd.api.types.is_numeric_dtype(present) and not pd.api.types.is_bool_dtype(present):
            # Numbers as numbers: two differ exactly when their canonical strings do (3 and 3.0 are one; + 0.0
            # makes -0.0 the 0 it is there), without a string per value.
            hashed = pd.util.hash_array(present.to_numpy(np.float64) + 0.0)
        else:
            hashed = pd.util.hash_array(levels(present).to_numpy(dtype=object))
        if len(self.hashes) == SKETCH_VALUES:  # full: only a hash below the largest kept can enter
            hashed = hashed[hashed < self.hashes[-1]]
        fresh = np.unique(hashed)
        if not len(fresh):
            return
        # Two sorted runs: a stable sort (timsort) merges them in linear time, where np.union1d would sort the
        # kept hashes again for every chunk (which made small chunks of a wide table crawl).
        merged = np.concatenate([self.hashes, fresh])
        merged.sort(kind="stable")
        first = np.empty(len(merged), bool)
        first[0] = True
        np.not_equal(merged[1:], merged[:-1], out=first[1:])
        self.hashes = merged[first][:SKETCH_VALUES]

    def count(self) -> int:
        if len(self.hashes) < SKETCH_VALUES:
            return len(self.hashes)
        # K-minimum values: K hashes spread uniformly over [0, 2^64) reach the K-th smallest at K/n of the range.
        return int(round((SKETCH_VALUES - 1) / (float(self.hashes[-1]) / 2.0**64)))


def first_values(kept: list[str], present: pd.Series) -> list[str]:
    """`kept` with the canonical values of `present` it has not seen added, up to FEW of them."""
    for value in levels(pd.Series(present.unique())):
        if len(kept) >= FEW:
            break
        if value not in kept:
            kept.append(value)
    return kept


@dataclass
class TypeEvidence:
    """A feature column's values as `decide_type` weighs them, added a chunk at a time."""

    present: int = 0
    datetime: bool = False
    bad: int = 0  # present values that are not numbers
    first_bad: tuple[int, Any] | None = None  # (1-based row, value) of the first
    all_dates: bool = True  # every present value, as text, looks like a date
    words: int = 0
    distinct: Distinct = field(default_factory=Distinct)

    def add(self, values: pd.Series) -> None:
        self.datetime = self.datetime or pd.api.types.is_datetime64_any_dtype(values)
        present = values.dropna()
        self.present += len(present)
        if self.datetime or not len(present):
            return
        self.distinct.add(present)
        if pd.api.types.is_numeric_dtype(present) or pd.api.types.is_bool_dtype(present):
            self.all_dates = False  # a number's text is one word and no date
            self.words += len(present)
            return
        if isinstance(present.dtype, pd.StringDtype):
            # Strings repeat (categories): each distinct one is parsed, matched and split once, then counted.
            codes, uniques = pd.factorize(present)
            values, counts = pd.Series(uniques, dtype=present.dtype), np.bincount(codes, minlength=len(uniques))
        else:  # Python objects: True and 1 are one key but not one text, so every value is looked at
            codes, values, counts = None, present, np.ones(len(present), np.int64)
        bad_values = _numbers(values)[1]
        bad = bad_values if codes is None else bad_values[codes]
        if bad.any():
            if self.first_bad is None:
                position = int(bad.nonzero()[0][0])
                self.first_bad = (row_number(present, position), present.iloc[position])
            self.bad += int(bad.sum())
        strings = values.astype(str)
        self.all_dates = self.all_dates and bool(strings.str.match(DATE).all())
        self.words += int((strings.str.split().str.len().to_numpy() * counts).sum())


def decide_type(src: str, col: str, seen: TypeEvidence) -> tuple[str, str]:
    """(type, note) of a feature column from the evidence of every chunk: a date column stays a date; numbers
    (two values: binary); mostly numbers is a typo, refused; two values: binary; dates as text; long strings:
    free text, dropped; nearly every value distinct: an identifier, dropped; other strings: a category."""
    if seen.datetime:
        return "date", ""
    distinct = seen.distinct.count()
    if not seen.bad:
        return ("binary" if distinct == 2 else "number"), ""
    if seen.bad * 2 <= seen.present:  # mostly numbers: a typo, not a category
        row, value = seen.first_bad
        raise PipelineInputError(
            f"{src}: column '{col}', row {row}: {value!r} is not a number (the column looks numeric; set "
            "ingest.columns to category to keep it)"
        )
    if distinct == 2:
        return "binary", ""
    if seen.all_dates:
        return "date", ""
    if seen.words / seen.present >= TEXT_WORDS:
        return "text", f"'{col}' looks like free text: dropped (set ingest.columns.{col}: category to keep it)"
    if seen.present >= IDENTIFIER_MIN_ROWS and distinct >= IDENTIFIER_RATIO * seen.present:
        return "identifier", (
            f"'{col}' looks like an identifier ({distinct} distinct values in {seen.present} rows): dropped "
            f"(set ingest.columns.{col}: category to keep it)"
        )
    return "category", ""


@dataclass
class LabelSeen:
    """The present label values of the rows of one missing pattern."""

    rows: int = 0
    values: set = field(default_factory=set)  # up to LABEL_VALUES distinct values
    more: bool = False  # ...and there were more
    integral: bool = True  # every numeric value is a whole number

    def add(self, values: pd.Series) -> None:
        present = values.dropna()
        self.rows += len(present)
        if pd.api.types.is_numeric_dtype(present) and not pd.api.types.is_bool_dtype(present):
            self.integral = self.integral and bool((present == present.round()).all())
        if not self.more:
            self.values.update(present.unique().tolist())
            if len(self.values) > LABEL_VALUES:
                self.more = True


class MissingPatterns:
    """Rows grouped by which of `columns` (the features, then the label) they miss: each pattern's rows, its
    first row (1-based) and the label's values in its rows."""

    def __init__(self, columns: list[str]) -> None:
        self.columns = columns
        self.rows: dict[bytes, int] = {}
        self.first: dict[bytes, int] = {}
        self.labels: dict[bytes, LabelSeen] = {}

    def add(self, chunk: pd.DataFrame) -> None:
        if not len(chunk):
            return
        missing = chunk[self.columns].isna().to_numpy()
        packed = np.packbits(missing, axis=1)
        keys, first, inverse, counts = np.unique(
            packed, axis=0, return_index=True, return_inverse=True, return_counts=True
        )
        label = chunk[self.columns[-1]]
        # Each pattern's rows: one stable sort of the pattern numbers, cut where the number changes.
        groups = np.split(np.argsort(inverse.reshape(-1), kind="stable"), np.cumsum(counts)[:-1])
        for key, start, count, rows in zip(map(bytes, keys), first, counts, groups, strict=True):
            if key not in self.rows:
                self.rows[key], self.first[key] = 0, int(chunk.index[start]) + 1
                self.labels[key] = LabelSeen()
            self.rows[key] += int(count)
            self.labels[key].add(label.iloc[rows] if len(keys) > 1 else label)

    def missed(self, key: bytes) -> list[str]:
        flags = np.unpackbits(np.frombuffer(key, np.uint8))[: len(self.columns)].astype(bool)
        return [c for c, f in zip(self.columns, flags, strict=True) if f]


@dataclass
class ProfileStats:
    """One profile row's numbers, merged over the chunks of a column: missing values, distinct values (dates as
    instants, others by `columns.levels`), the range of numbers (and of a numeric label) and dates, and which
    value of a binary column is 1."""

    missing: int = 0
    distinct: Distinct = field(default_factory=Distinct)
    few: list = field(default_factory=list)
    low: Any = None
    high: Any = None
    dates: bool = False

    def add(self, values: pd.Series, kind: str, role: str) -> None:
        self.missing += int(values.isna().sum())
        present = values.dropna()
        if not len(present):
            return
        self.dates = pd.api.types.is_datetime64_any_dtype(values)
        numeric = pd.api.types.is_numeric_dtype(present) and not pd.api.types.is_bool_dtype(present)
        self.distinct.add(present)
        if kind == "binary":
            first_values(self.few, present)
        if self.dates or kind in ("number", "log_number") or (role == "label" and numeric):
            low, high = present.min(), present.max()
            self.low = low if self.low is None else min(self.low, low)
            self.high = high if self.high is None else max(self.high, high)

    def row(self, name: str, role: str, kind: str, source: str, note: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "column": name,
            "role": role,
            "type": kind,
            "type_from": source,
            "missing": self.missing,
            "distinct": self.distinct.count(),
            "min": None,
            "max": None,
            "note": note,
        }
        if self.low is not None and self.dates:
            out["min"], out["max"] = str(self.low.date()), str(self.high.date())
        elif self.low is not None:
            out["min"], out["max"] = float(self.low), float(self.high)
        if kind == "binary" and self.few:
            out["positive"] = binary_positive(sorted(self.few))
        return out
