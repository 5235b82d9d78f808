"""Ingest a table: read it, type its columns, handle gaps (ingest.missing), profile it, write table.parquet.

Row numbers in messages are 1-based data rows (the header is not counted).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.atomic import write_json
from pipelines.config import IngestParams
from pipelines.errors import PipelineInputError
from pipelines.modalities.sources import fetched, load_builtin_table, read_table
from pipelines.modalities.tables.balance import distribution_line, imbalance_warning, label_distribution
from pipelines.modalities.tables.columns import (
    DROPPED,
    binary_positive,
    column_profile,
    convert,
    infer_type,
    levels,
    profile_lines,
)

RAW_TABLE = "table.parquet"
# Rows per Parquet row group of the raw table: prepare reads it a row group at a time at the least, so its
# memory is bounded by this (and prepare.chunk_rows), not by the table's size.
RAW_ROW_GROUP = 16384
PROFILE = "profile.json"
MAX_CLASSES_FOR_AUTO = 20


def load_source(params: IngestParams) -> tuple[pd.DataFrame, dict]:
    """Return the raw table and a description of where it came from."""
    source = params.source
    if source.split(":", 1)[0] in ("sklearn", "palmerpenguins"):
        return load_builtin_table(source), {"source": source, "kind": source.split(":", 1)[0]}
    with fetched(source) as local:
        digest = hashlib.sha256(local.read_bytes()).hexdigest()
        return read_table(local, source), {"source": source, "kind": "file", "sha256": digest}


def infer_task(label: pd.Series) -> str:
    values = label.dropna()
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return "binary" if values.nunique() == 2 else "multiclass"
    integral = bool((values == values.round()).all())
    n = values.nunique()
    if integral and n == 2:
        return "binary"
    if integral and n <= MAX_CLASSES_FOR_AUTO and n < len(values) / 2:
        return "multiclass"
    return "regression"


def _check_columns(df: pd.DataFrame, params: Any) -> list[str]:
    src = params.source
    if df.shape[1] == 0 or len(df) == 0:
        raise PipelineInputError(f"{src}: no data rows (expected a header row and at least one data row)")
    if params.label not in df.columns:
        raise PipelineInputError(
            f"{src}: label column '{params.label}' (ingest.label) not found; columns are: {', '.join(df.columns)}"
        )
    features = [c for c in df.columns if c != params.label]
    if not features:
        raise PipelineInputError(f"{src}: no feature columns besides the label '{params.label}'")
    typed = getattr(params, "columns", {})
    unknown = [c for c in typed if c not in features]
    if unknown:
        what = [f"'{c}'" + (" (the label)" if c == params.label else "") for c in unknown]
        raise PipelineInputError(
            f"ingest.columns: no feature column {', '.join(what)} in {src}; its feature columns are: "
            + ", ".join(features)
        )
    return features


def type_columns(df: pd.DataFrame, features: list[str], params: Any) -> tuple[dict[str, str], list[dict]]:
    """Each feature column's type (params first, else inferred), converted in place; the profile's rows."""
    src, typed = params.source, getattr(params, "columns", {})
    types: dict[str, str] = {}
    profile = []
    for col in features:
        values = df[col]
        kind, note, origin = typed.get(col), "", "params"
        if kind not in ("drop", "text") and values.isna().all():
            raise PipelineInputError(
                f"{src}: column '{col}' is entirely missing; remove it or set ingest.columns.{col}: drop"
            )
        if kind is None:
            (kind, note), origin = infer_type(src, col, values), "inferred"
        if kind in DROPPED:
            note = note or f"'{col}': dropped (ingest.columns.{col}: {kind})"
        else:
            df[col] = convert(src, col, kind, values)
            types[col] = kind
        profile.append(column_profile(col, "feature", kind, origin, df[col], note))
    return types, profile


def _handle_missing(df: pd.DataFrame, kept: list[str], params: Any) -> tuple[pd.DataFrame, int]:
    """Apply ingest.missing; returns the table and how many rows were dropped."""
    src, label = params.source, params.label
    cols = kept + [label]
    missing = df[cols].isna()
    if not missing.to_numpy().any():
        return df, 0
    mode = getattr(params, "missing", "error")
    if mode == "error":
        row, colidx = (int(i[0]) for i in missing.to_numpy().nonzero())
        raise PipelineInputError(
            f"{src}: row {row + 1}, column '{cols[colidx]}': missing value "
            f"({int(missing.any(axis=1).sum())} rows have one; set ingest.missing: fill or drop to keep training)"
        )
    gone = missing.any(axis=1) if mode == "drop" else missing[label]
    df = df.loc[~gone].reset_index(drop=True)
    if len(df) == 0:
        raise PipelineInputError(f"{src}: every row has a missing value" + (" label" if mode == "fill" else ""))
    return df, int(gone.sum())


def validate_table(df: pd.DataFrame, params: IngestParams) -> tuple[pd.DataFrame, str, dict[str, Any]]:
    """Type the columns, handle gaps, check the label; return the clean table, its task and what was found."""
    src, label = params.source, params.label
    df = df.rename(columns=lambda c: str(c).strip())
    features = _check_columns(df, params)
    df = df.copy()
    types, profile = type_columns(df, features, params)
    raw_label = df[label]
    df, dropped = _handle_missing(df[list(types) + [label]], list(types), params)
    y = df[label]
    task = params.task if params.task != "auto" else infer_task(y)
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
            raise PipelineInputError(f"{src}: label '{label}' is not numeric, so ingest.task cannot be regression")
        df[label] = convert(src, label, "number", y)
    else:
        if pd.api.types.is_float_dtype(y) and bool((y == y.round()).all()):
            df[label] = y.astype("int64")  # 0.0/1.0 after blanks were dropped: classes 0 and 1
        n = df[label].nunique()
        if n < 2:
            raise PipelineInputError(f"{src}: label '{label}' has a single class; a classifier needs two or more")
        if task == "binary" and n != 2:
            raise PipelineInputError(f"{src}: ingest.task is binary but label '{label}' has {n} classes")
    profile.append(column_profile(label, "label", task, "inferred", raw_label, ""))
    found = {
        "column_types": types,
        "missing": {c: int(df[c].isna().sum()) for c in types},
        "binary": {c: _binary_pair(df[c]) for c, k in types.items() if k == "binary"},
        "dropped_columns": [r["column"] for r in profile if r["role"] == "feature" and r["column"] not in types],
        "rows_dropped": dropped,
        "profile": profile,
    }
    return df, task, found


def _binary_pair(values: pd.Series) -> list[str]:
    """[positive, negative] of a binary column (its stored values are canonical strings)."""
    distinct = sorted(levels(values.dropna()).unique())
    if len(distinct) != 2:
        raise PipelineInputError(f"column '{values.name}' is typed binary but has {len(distinct)} distinct values")
    positive = binary_positive(distinct)
    return [positive, next(v for v in distinct if v != positive)]


def ingest(params: IngestParams, out_dir: Path) -> dict:
    raw, info = load_source(params)
    table, task, found = validate_table(raw, params)
    profile = found.pop("profile")
    table.to_parquet(out_dir / RAW_TABLE, index=False, row_group_size=RAW_ROW_GROUP)
    described = {"source": params.source, "rows": len(raw), "columns": profile, "warnings": []}
    if task != "regression":  # the classes' shares, and a warning when one is rare
        described["label_distribution"] = label_distribution(table[params.label])
        rare = imbalance_warning(described["label_distribution"], params.label)
        described["warnings"] += [rare] if rare else []
    write_json(out_dir / PROFILE, described)
    info.update(rows=len(table), columns=list(table.columns), label=params.label, task=task, **found)
    info["summary"] = f"{len(table)} rows x {len(table.columns)} columns (task: {task})"
    # The log shows the columns a person should look at; the whole profile is in the file (and its artifact).
    notable = [row for row in profile if _worth_showing(row)]
    for line in profile_lines(notable) if notable else []:
        print(f"ingest: {line}")
    if len(notable) < len(profile):
        plain = len(profile) - len(notable)
        print(f"ingest: and {plain} number column(s) with no gaps (every column: the profile, {PROFILE})")
    if "label_distribution" in described:
        print(f"ingest: {distribution_line(described['label_distribution'], params.label)}")
    for warning in described["warnings"]:
        print(f"ingest: warning: {warning}")
    for row in profile:
        if row["note"]:
            print(f"ingest: note: {row['note']}")
    if found["rows_dropped"]:
        what = "a missing label" if getattr(params, "missing", "") == "fill" else "a missing value"
        print(f"ingest: dropped {found['rows_dropped']} row(s) with {what}")
    return info


def _worth_showing(row: dict) -> bool:
    """A column whose handling a person may want to check: not a plain number column without gaps."""
    plain = row["role"] != "label" and row["type"] == "number" and row["type_from"] != "params"
    return not plain or bool(row["missing"] or row["note"])
