"""Ingest a table: read it, type its columns, handle gaps (ingest.missing), profile it, write table.parquet.

A table larger than memory is read `ingest.chunk_rows` rows at a time, twice (`tables/ingest_scan.py`):
the first pass gathers what types the columns, finds the gaps and the label's values; then the columns'
types, ingest.missing and the task are decided, and any refusal is raised before anything is written; the
second pass converts each chunk, profiles it and appends its rows to table.parquet. Memory is bounded by the
chunk (and by a few small sketches per column), not by the table; the result is the table's in one piece.

Row numbers in messages are 1-based data rows (the header is not counted).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.atomic import write_json
from pipelines.config import IngestParams
from pipelines.errors import PipelineInputError
from pipelines.modalities.sources import fetched, load_builtin_table
from pipelines.modalities.tables.balance import (
    class_counts,
    distribution_line,
    imbalance_warning,
    label_distribution,
)
from pipelines.modalities.tables.chunks import TableChunks
from pipelines.modalities.tables.columns import DROPPED, binary_positive, convert, levels, profile_lines
from pipelines.modalities.tables.ingest_scan import (
    LABEL_VALUES,
    Distinct,
    LabelSeen,
    MissingPatterns,
    ProfileStats,
    TypeEvidence,
    decide_type,
    first_values,
)

RAW_TABLE = "table.parquet"
# Rows per Parquet row group of the raw table: prepare reads it a row group at a time at the least, so its
# memory is bounded by this (and prepare.chunk_rows), not by the table's size.
RAW_ROW_GROUP = 16384
PROFILE = "profile.json"
MAX_CLASSES_FOR_AUTO = 20
DEFAULT_CHUNK_ROWS = 65536


class FrameChunks:
    """A table already in memory (a built-in one), in the chunks a file would be read in."""

    def __init__(self, frame: pd.DataFrame, chunk_rows: int) -> None:
        self.frame, self.chunk_rows = frame.reset_index(drop=True), chunk_rows

    def __iter__(self) -> Iterator[pd.DataFrame]:
        for start in range(0, max(len(self.frame), 1), self.chunk_rows):
            yield self.frame.iloc[start : start + self.chunk_rows]


@contextlib.contextmanager
def table_source(params: IngestParams) -> Iterator[tuple[Iterable[pd.DataFrame], dict]]:
    """The source's rows in chunks (iterable twice), and a description of where they came from."""
    source, chunk_rows = params.source, getattr(params, "chunk_rows", DEFAULT_CHUNK_ROWS)
    if source.split(":", 1)[0] in ("sklearn", "palmerpenguins"):
        yield FrameChunks(load_builtin_table(source), chunk_rows), {"source": source, "kind": source.split(":")[0]}
        return
    with fetched(source) as local:
        with local.open("rb") as file:
            digest = hashlib.file_digest(file, "sha256").hexdigest()
        yield TableChunks(local, source, chunk_rows), {"source": source, "kind": "file", "sha256": digest}


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


def _binary_pair(name: str, few: list[str], distinct: Distinct) -> list[str]:
    """[positive, negative] of a binary column (its stored values are canonical strings)."""
    if distinct.count() != 2:
        raise PipelineInputError(f"column '{name}' is typed binary but has {distinct.count()} distinct values")
    positive = binary_positive(sorted(few))
    return [positive, next(v for v in few if v != positive)]


def ingest(params: IngestParams, out_dir: Path) -> dict:
    with table_source(params) as (chunks, info):
        scan = scan_table(chunks, params)
        plan = plan_table(scan, params)
        written = write_table(chunks, scan, plan, params, out_dir / RAW_TABLE)
    label = params.label
    profile = [
        written.profiles[head["column"]].row(head["column"], "feature", head["type"], head["type_from"], head["note"])
        for head in plan.rows
    ]
    profile.append(written.profiles[label].row(label, "label", plan.task, "inferred", ""))
    found = {
        "column_types": plan.types,
        "missing": {c: written.missing[c] for c in plan.types},
        "binary": {c: _binary_pair(c, *written.binary[c]) for c in written.binary},
        "dropped_columns": [h["column"] for h in plan.rows if h["column"] not in plan.types],
        "rows_dropped": scan.rows - written.rows,
    }
    described = {"source": params.source, "rows": scan.rows, "columns": profile, "warnings": []}
    task = plan.task
    if task != "regression":  # the classes' shares, and a warning when one is rare
        described["label_distribution"] = label_distribution(dict(written.classes))
        rare = imbalance_warning(described["label_distribution"], label)
        described["warnings"] += [rare] if rare else []
    write_json(out_dir / PROFILE, described)
    columns = [*plan.types, label]
    info.update(rows=written.rows, columns=columns, label=label, task=task, **found)
    info["summary"] = f"{written.rows} rows x {len(columns)} columns (task: {task})"
    # The log shows the columns a person should look at; the whole profile is in the file (and its artifact).
    notable = [row for row in profile if _worth_showing(row)]
    for line in profile_lines(notable) if notable else []:
        print(f"ingest: {line}")
    if len(notable) < len(profile):
        plain = len(profile) - len(notable)
        print(f"ingest: and {plain} number column(s) with no gaps (every column: the profile, {PROFILE})")
    if "label_distribution" in described:
        print(f"ingest: {distribution_line(described['label_distribution'], label)}")
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
