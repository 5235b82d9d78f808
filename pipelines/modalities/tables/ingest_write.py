"""Ingest's second pass: each chunk converted to the planned types, profiled, and appended to the raw
table (`tables/ingest.py` runs it after `ingest_plan.plan_table`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.modalities.tables.balance import class_counts
from pipelines.modalities.tables.columns import convert, levels
from pipelines.modalities.tables.ingest_plan import Plan, Scan, stripped
from pipelines.modalities.tables.ingest_scan import Distinct, ProfileStats, first_values

# Rows per Parquet row group of the raw table: prepare reads it a row group at a time at the least, so its
# memory is bounded by this (and prepare.chunk_rows), not by the table's size.
RAW_ROW_GROUP = 16384


@dataclass
class Written:
    """What the second pass found in the rows it wrote (and the profile of every row it read)."""

    rows: int = 0
    profiles: dict[str, ProfileStats] = field(default_factory=dict)
    missing: Counter = field(default_factory=Counter)
    binary: dict[str, tuple[list, Distinct]] = field(default_factory=dict)
    classes: Counter = field(default_factory=Counter)


def _kept_rows(chunk: pd.DataFrame, scan: Scan, gone: set[bytes]) -> np.ndarray:
    """Which rows of the chunk survive ingest.missing: those whose missing pattern is not dropped."""
    if not gone:
        return np.ones(len(chunk), bool)
    packed = np.packbits(chunk[scan.patterns.columns].isna().to_numpy(), axis=1)
    keys, inverse = np.unique(packed, axis=0, return_inverse=True)
    return np.array([bytes(key) not in gone for key in keys])[inverse.reshape(-1)]


def write_table(chunks: Iterable[pd.DataFrame], scan: Scan, plan: Plan, params: Any, out: Path) -> Written:
    """The second pass: convert, profile and append each chunk's kept rows to `out` (a Parquet file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    src, label = params.source, params.label
    found = Written(profiles={c: ProfileStats() for c in [*scan.features, label]})
    kinds = {head["column"]: head["type"] for head in plan.rows}
    found.binary = {c: ([], Distinct()) for c, k in plan.types.items() if k == "binary"}
    writer = None
    try:
        for chunk in map(stripped, chunks):
            table = pd.DataFrame(index=chunk.index)
            for col in scan.features:
                values = convert(src, col, kinds[col], chunk[col]) if col in plan.types else chunk[col]
                found.profiles[col].add(values, kinds[col], "feature")
                if col in plan.types:
                    table[col] = values
            found.profiles[label].add(chunk[label], plan.task, "label")
            table[label] = chunk[label]
            table = table.loc[_kept_rows(chunk, scan, plan.gone)]
            if plan.task == "regression":
                table[label] = convert(src, label, "number", table[label])
            elif plan.label_dtype:
                table[label] = table[label].astype(plan.label_dtype)  # 0.0/1.0 after blanks were dropped: 0 and 1
            found.rows += len(table)
            for col in plan.types:
                found.missing[col] += int(table[col].isna().sum())
            for col, (few, distinct) in found.binary.items():
                present = levels(table[col].dropna())
                first_values(few, present)
                distinct.add(present)
            if plan.task != "regression":
                found.classes.update(class_counts(table[label]))
            arrow = pa.Table.from_pandas(table, preserve_index=False)
            if writer is None:
                schema = stored_schema(arrow.schema, plan, label)
                writer = pq.ParquetWriter(out, schema)
            writer.write_table(arrow.cast(writer.schema), row_group_size=RAW_ROW_GROUP)
    finally:
        if writer is not None:
            writer.close()
    return found


def stored_schema(first: Any, plan: Plan, label: str) -> Any:
    """The raw table's Arrow schema: fixed by the column types, not by what the first chunk happened to hold
    (a chunk whose category column is all gaps would type it as null)."""
    import pyarrow as pa

    fields = []
    for column in first:
        kind = plan.types.get(column.name)
        if kind in ("number", "log_number") or (column.name == label and plan.task == "regression"):
            column = column.with_type(pa.float64())
        elif kind in ("binary", "category") or (column.name == label and pa.types.is_null(column.type)):
            column = column.with_type(pa.string())
        fields.append(column)
    return pa.schema(fields, metadata=first.metadata)
