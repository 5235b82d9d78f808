"""Helpers the modalities share: seeded splits, and writing splits held in memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.config import PrepareParams
from pipelines.errors import PipelineInputError
from pipelines.handoffs.splits import write_split


def _split_sizes(n: int, params: PrepareParams, what: str = "rows", min_train: int = 1) -> tuple[int, int]:
    """(test, val) sizes of a split of `n` rows (or `what`): at least one each, and `min_train` left to train."""
    n_test = max(1, int(round(n * params.test_fraction)))
    n_val = max(1, int(round(n * params.val_fraction)))
    if n - n_test - n_val < min_train:
        raise PipelineInputError(f"prepare: {n} {what} are too few to split into train/val/test")
    return n_test, n_val


def shuffled_split(n: int, params: PrepareParams) -> dict[str, np.ndarray]:
    """Deterministic shuffled split: same seed and row count give the same rows."""
    n_test, n_val = _split_sizes(n, params)
    order = np.random.default_rng(params.seed).permutation(n)
    return {
        "test": np.sort(order[:n_test]),
        "val": np.sort(order[n_test : n_test + n_val]),
        "train": np.sort(order[n_test + n_val :]),
    }


def shuffled_membership(n: int, params: PrepareParams, codes: dict[str, int]) -> np.ndarray:
    """Each row's split, as `codes[split]`: the rows `shuffled_split` gives each split, in 1 byte a row (and a
    4-byte shuffle for the moment) rather than its 16 bytes a row (an int64 permutation and the sorted copies)."""
    n_test, n_val = _split_sizes(n, params)
    order = np.arange(n, dtype=np.int32 if n < 2**31 else np.int64)
    np.random.default_rng(params.seed).shuffle(order)  # the order permutation(n) gives, whatever the dtype
    membership = np.full(n, codes["train"], np.int8)
    membership[order[:n_test]] = codes["test"]
    membership[order[n_test : n_test + n_val]] = codes["val"]
    return membership


def chronological_split(n: int, params: PrepareParams, what: str) -> dict[str, range]:
    """Ordered split for sequences: train is the past, test the most recent part (no leakage from the future).
    Ranges, not index arrays: a corpus of any length splits in constant memory."""
    n_test, n_val = _split_sizes(n, params, what, min_train=2)
    n_train = n - n_val - n_test
    return {"train": range(n_train), "val": range(n_train, n - n_test), "test": range(n - n_test, n)}


def encode_classes(labels: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Map labels to 0..K-1 in sorted order; class names are their string forms."""
    classes = sorted(set(labels.tolist()), key=lambda v: (str(type(v)), v))
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[v] for v in labels.tolist()], dtype=np.int64), [str(c) for c in classes]


def write_splits(out: Path, arrays: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Each split's (x, y), held in memory, as shards under out/<split>/ (pipelines.handoffs.splits)."""
    for split, (x, y) in arrays.items():
        write_split(out / split, x, y)
