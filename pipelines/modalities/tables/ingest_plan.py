"""Ingest's first pass over a table, and what it decides before anything is written (`tables/ingest.py`).

`scan_table` reads every chunk once for the columns' type evidence, the gaps' patterns and the label's
values; `plan_table` then types the features (ingest.columns first, else inferred), picks the rows that
ingest.missing drops and the task, and raises every refusal of the table.

Row numbers in messages are 1-based data rows (the header is not counted).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from pipelines.errors import PipelineInputError
from pipelines.modalities.tables.columns import DROPPED
from pipelines.modalities.tables.ingest_scan import (
    LABEL_VALUES,
    LabelSeen,
    MissingPatterns,
    TypeEvidence,
    decide_type,
)

MAX_CLASSES_FOR_AUTO = 20


def stripped(chunk: pd.DataFrame) -> pd.DataFrame:
    return chunk.rename(columns=lambda c: str(c).strip())


def _check_columns(columns: list[str], params: Any) -> list[str]:
    src = params.source
    if not columns:
        raise PipelineInputError(f"{src}: no data rows (expected a header row and at least one data row)")
    if params.label not in columns:
        raise PipelineInputError(
            f"{src}: label column '{params.label}' (ingest.label) not found; columns are: {', '.join(columns)}"
        )
    features = [c for c in columns if c != params.label]
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


@dataclass
class Scan:
    """The first pass: the columns, the rows, each untyped feature's evidence, and the gaps' patterns."""

    features: list[str]
    rows: int = 0
    evidence: dict[str, TypeEvidence] = field(default_factory=dict)
    patterns: MissingPatterns | None = None
    label_numeric: bool = False
    label_float: bool = False


def scan_table(chunks: Iterable[pd.DataFrame], params: Any) -> Scan:
    scan: Scan | None = None
    typed = getattr(params, "columns", {})
    for chunk in map(stripped, chunks):
        if scan is None:
            features = _check_columns(list(chunk.columns), params)
            scan = Scan(features, patterns=MissingPatterns([*features, params.label]))
            scan.evidence = {c: TypeEvidence() for c in features if c not in typed}
        scan.rows += len(chunk)
        for col, seen in scan.evidence.items():
            seen.add(chunk[col])
        scan.patterns.add(chunk)
        label = chunk[params.label]
        scan.label_numeric = pd.api.types.is_numeric_dtype(label) and not pd.api.types.is_bool_dtype(label)
        scan.label_float = pd.api.types.is_float_dtype(label)
    if scan is None or scan.rows == 0:
        raise PipelineInputError(f"{params.source}: no data rows (expected a header row and at least one data row)")
    return scan


@dataclass
class Plan:
    """What the first pass decided: each feature's type (or why it is dropped), the rows kept, the task."""

    types: dict[str, str]  # kept feature -> type
    rows: list[dict[str, Any]]  # each feature's profile head: column, type, type_from, note
    gone: set[bytes]  # missing patterns whose rows are dropped
    task: str
    label_dtype: str | None = None  # "int64": whole-number classes stored as integers


def type_features(scan: Scan, params: Any) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Each feature column's type (params first, else inferred), in the table's column order."""
    src, typed = params.source, getattr(params, "columns", {})
    missed = Counter()
    for key, count in scan.patterns.rows.items():
        for col in scan.patterns.missed(key):
            missed[col] += count
    types: dict[str, str] = {}
    heads = []
    for col in scan.features:
        kind, note, origin = typed.get(col), "", "params"
        if kind not in ("drop", "text") and missed[col] == scan.rows:
            raise PipelineInputError(
                f"{src}: column '{col}' is entirely missing; remove it or set ingest.columns.{col}: drop"
            )
        if kind is None:
            (kind, note), origin = decide_type(src, col, scan.evidence[col]), "inferred"
        if kind in DROPPED:
            note = note or f"'{col}': dropped (ingest.columns.{col}: {kind})"
        else:
            types[col] = kind
        heads.append({"column": col, "type": kind, "type_from": origin, "note": note})
    return types, heads


def rows_to_drop(scan: Scan, kept: list[str], params: Any) -> set[bytes]:
    """The missing patterns whose rows ingest.missing drops; refuses the table under `error`."""
    src, label, patterns = params.source, params.label, scan.patterns
    cols = [*kept, label]
    gapped = {key for key in patterns.rows if set(patterns.missed(key)) & set(cols)}
    if not gapped:
        return set()
    mode = getattr(params, "missing", "error")
    if mode == "error":
        first = min(gapped, key=patterns.first.get)
        column = next(c for c in cols if c in patterns.missed(first))
        raise PipelineInputError(
            f"{src}: row {patterns.first[first]}, column '{column}': missing value "
            f"({sum(patterns.rows[k] for k in gapped)} rows have one; set ingest.missing: fill or drop to keep "
            "training)"
        )
    gone = gapped if mode == "drop" else {k for k in gapped if label in patterns.missed(k)}
    if sum(patterns.rows[k] for k in gone) == scan.rows:
        raise PipelineInputError(f"{src}: every row has a missing value" + (" label" if mode == "fill" else ""))
    return gone


def surviving_labels(scan: Scan, gone: set[bytes]) -> LabelSeen:
    merged = LabelSeen()
    for key, seen in scan.patterns.labels.items():
        if key in gone:
            continue
        merged.rows += seen.rows
        merged.integral = merged.integral and seen.integral
        merged.values |= seen.values
        merged.more = merged.more or seen.more or len(merged.values) > LABEL_VALUES
    return merged


def infer_task(numeric: bool, labels: LabelSeen) -> str:
    """regression / binary / multiclass from the kept rows' label values."""
    n = LABEL_VALUES + 1 if labels.more else len(labels.values)
    if not numeric:
        return "binary" if n == 2 else "multiclass"
    if labels.integral and n == 2:
        return "binary"
    if labels.integral and n <= MAX_CLASSES_FOR_AUTO and n < labels.rows / 2:
        return "multiclass"
    return "regression"


def plan_table(scan: Scan, params: Any) -> Plan:
    """Types, the rows to drop and the task, from the first pass: every refusal before anything is written."""
    src, label = params.source, params.label
    types, heads = type_features(scan, params)
    gone = rows_to_drop(scan, list(types), params)
    labels = surviving_labels(scan, gone)
    task = params.task if params.task != "auto" else infer_task(scan.label_numeric, labels)
    if task == "regression":
        if not scan.label_numeric:
            raise PipelineInputError(f"{src}: label '{label}' is not numeric, so ingest.task cannot be regression")
        return Plan(types, heads, gone, task)
    n = len(labels.values)
    if n < 2:
        raise PipelineInputError(f"{src}: label '{label}' has a single class; a classifier needs two or more")
    if task == "binary" and n != 2:
        shown = f"more than {LABEL_VALUES}" if labels.more else str(n)
        raise PipelineInputError(f"{src}: ingest.task is binary but label '{label}' has {shown} classes")
    return Plan(types, heads, gone, task, "int64" if scan.label_float and labels.integral else None)
