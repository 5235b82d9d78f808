"""Applying a fitted table preprocessing (`encoding.TablePreprocessor`'s column specs) to rows, column by column.

Each column comes as a table's Series or as a plain list of values (the online endpoint's JSON rows taken apart:
no DataFrame built); a list of plain numbers goes straight to NumPy (`columns.number_array`), any other column
through the conversion a file's column takes, with the same fills, levels and messages naming the row.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from pipelines.errors import PipelineInputError
from pipelines.modalities.tables.columns import NUMBER_KINDS, as_series, convert, number_array, row_number
from pipelines.modalities.tables.entries import dense_entries

UNKNOWN, MISSING = "<unknown>", "<missing>"
# Feature name -> its values: a DataFrame, or a dict of lists (rows taken apart by column).
Columns = pd.DataFrame | Mapping[str, pd.Series | list]


def encode_columns(specs: list[dict[str, Any]], columns: Columns, source: str) -> tuple[np.ndarray, np.ndarray]:
    """(dense entries before scaling, embedding codes) as float32 arrays, for the columns `specs` describe."""
    dense: list[np.ndarray] = []
    codes: list[np.ndarray] = []
    for spec in specs:
        column = columns[spec["name"]]
        if spec["type"] in NUMBER_KINDS:
            values = number_array(source, spec["name"], spec["type"], column)
        else:
            values = convert(source, spec["name"], spec["type"], as_series(column))
        if spec["type"] == "category":
            code = category_codes(spec, values)
            if spec["embedding"]:
                codes.append(code.reshape(-1, 1).astype(np.float32))
            else:
                dense.append(np.eye(len(spec["levels"]), dtype=np.float32)[code])
            continue
        raw = dense_entries(spec, values)
        gaps = np.isnan(raw)
        if "fill" not in spec and gaps.any():
            row = int(gaps.nonzero()[0][0])
            raise PipelineInputError(
                f"{source}: row {row_number(column, row)}, column '{spec['name']}': missing or not a number"
            )
        raw = np.where(gaps, np.asarray(spec.get("fill", 0.0)), raw)
        dense.append(raw)
        if spec.get("indicator"):
            dense.append(gaps.any(axis=1, keepdims=True).astype(np.float64))
    n = len(columns) if isinstance(columns, pd.DataFrame) else len(next(iter(columns.values()), ()))
    as32 = [np.asarray(d).astype(np.float32) for d in dense]
    return (np.hstack(as32) if as32 else np.zeros((n, 0), np.float32)), (
        np.hstack(codes) if codes else np.zeros((n, 0), np.float32)
    )


def category_codes(spec: dict[str, Any], values: pd.Series) -> np.ndarray:
    """Each value's level index; a value not seen in training is the unknown level (0)."""
    index = {level: i for i, level in enumerate(spec["levels"])}
    missing = index.get(MISSING, 0)  # a gap never seen in training: the unknown level
    return np.array([missing if v is None else index.get(v, 0) for v in values], dtype=np.int64)
