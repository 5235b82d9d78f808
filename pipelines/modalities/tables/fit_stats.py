"""Statistics of the training rows gathered chunk by chunk: what `TablePreprocessor.fit` needs, in bounded memory.

The state it gives equals a fit on the whole training table (within float rounding):

- category levels: the union of each chunk's values;
- mean fills, and the standardization of dense entries: count, mean and M2 per entry, merged across chunks
  (Chan et al.'s parallel variance), the filled gaps added at the end as `missing` copies of the fill;
- median fills, exactly, in two passes: the first counts each entry's values per bucket of the float64 order
  (the top 20 bits of a sortable key: 1/256 of a binade per bucket, at most 2^20 buckets, stored sparsely);
  the second keeps only the values of the one or two buckets that hold the middle rank(s), and sorts them.

Memory: per entry, the occupied buckets (usually a few thousand) and the middle buckets' values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

SIGN = np.uint64(1 << 63)
BUCKET_SHIFT = np.uint64(44)  # keep the top 20 bits of the 64-bit sortable key


def _bucket(values: np.ndarray) -> np.ndarray:
    """Float64 values -> their bucket: integers in the values' order (negative values reversed, -0 below +0)."""
    bits = values.astype(np.float64).view(np.uint64)
    key = np.where(bits & SIGN, ~bits, bits | SIGN)
    return key >> BUCKET_SHIFT


@dataclass
class Moments:
    """Count, mean and sum of squared deviations, mergeable (population variance = m2 / n)."""

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, values: np.ndarray) -> None:
        if len(values) == 0:
            return
        values = values.astype(np.float64)
        mean = float(values.mean())
        self.merge(Moments(len(values), mean, float(((values - mean) ** 2).sum())))

    def merge(self, other: Moments) -> None:
        if other.n == 0:
            return
        n = self.n + other.n
        delta = other.mean - self.mean
        self.mean += delta * other.n / n
        self.m2 += other.m2 + delta * delta * self.n * other.n / n
        self.n = n

    @property
    def std(self) -> float:
        return float(np.sqrt(self.m2 / self.n)) if self.n else 0.0


@dataclass
class EntryStats:
    """One dense entry before filling (a number column, or a date part): its present values' statistics."""

    median: bool  # whether the median is asked for (two passes)
    missing: int = 0
    present: Moments = field(default_factory=Moments)  # of the values as float64 (the mean fill)
    as32: Moments = field(default_factory=Moments)  # of the values as the float32 inputs hold them
    # Occupied buckets and their counts, sorted (arrays: 16 bytes a bucket, where a dict took ~10x that).
    buckets: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    middle: dict[int, list[np.ndarray]] = field(default_factory=dict)  # second pass: the middle buckets' values

    def add(self, column: np.ndarray) -> None:
        gaps = np.isnan(column)
        seen = column[~gaps]
        self.missing += int(gaps.sum())
        self.present.add(seen)
        self.as32.add(seen.astype(np.float32))
        if self.median and len(seen):
            ids, counts = np.unique(_bucket(seen), return_counts=True)
            merged, where = np.unique(np.concatenate([self.buckets, ids]), return_inverse=True)
            self.counts = np.bincount(where, weights=np.concatenate([self.counts, counts]), minlength=len(merged))
            self.buckets, self.counts = merged, self.counts.astype(np.int64)

    def middle_ranks(self) -> list[tuple[int, int]]:
        """(bucket, rank within it) of the one or two middle values."""
        n = self.present.n
        ends = np.cumsum(self.counts)  # rows up to and including each bucket
        out = []
        for rank in sorted({(n - 1) // 2, n // 2}):
            i = int(np.searchsorted(ends, rank, side="right"))
            out.append((int(self.buckets[i]), rank - int(ends[i] - self.counts[i])))
        return out

    def keep_middle(self, column: np.ndarray, wanted: set[int]) -> None:
        seen = column[~np.isnan(column)]
        ids = _bucket(seen)
        for bucket in wanted:
            self.middle.setdefault(bucket, []).append(seen[ids == np.uint64(bucket)])

    def fill(self, how: str | float) -> float:
        if isinstance(how, (int, float)):
            return float(how)
        if self.present.n == 0:
            return 0.0
        if how == "mean":
            return self.present.mean
        picked = [np.sort(np.concatenate(self.middle[b]))[r] for b, r in self.middle_ranks()]
        return float(np.mean(picked))

    def filled(self, fill: float) -> Moments:
        """The moments of the entry's float32 inputs once gaps hold the fill."""
        out = Moments(self.as32.n, self.as32.mean, self.as32.m2)
        out.merge(Moments(self.missing, float(np.float32(fill)), 0.0))
        return out


def two_passes(
    chunks: Callable[[], Iterable],
    entries: Callable[[object], list[np.ndarray]],
    stats: list[EntryStats],
    first: Callable[[object], None] | None = None,
) -> None:
    """Pass 1 over `chunks()` feeds every entry (and `first(chunk)`, for what else the caller gathers);
    pass 2, only when a median is asked for, keeps the middle buckets' values."""
    for chunk in chunks():
        if first is not None:
            first(chunk)
        for stat, column in zip(stats, entries(chunk), strict=True):
            stat.add(column)
    wanted = [{b for b, _ in s.middle_ranks()} if s.median and s.present.n else set() for s in stats]
    if not any(wanted):
        return
    for chunk in chunks():
        for stat, column, buckets in zip(stats, entries(chunk), wanted, strict=True):
            if buckets:
                stat.keep_middle(column, buckets)
