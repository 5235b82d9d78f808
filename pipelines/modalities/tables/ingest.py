"""Ingest a table: read it, type its columns, handle gaps (ingest.missing), profile it, write table.parquet.

A table larger than memory is read `ingest.chunk_rows` rows at a time, twice (the sketches each pass keeps
are in `tables/ingest_scan.py`): the first pass gathers what types the columns, finds the gaps and the
label's values; then the columns' types, ingest.missing and the task are decided, and any refusal is raised
before anything is written (`tables/ingest_plan.py`); the second pass converts each chunk, profiles it and
appends its rows to table.parquet (`tables/ingest_write.py`). Memory is bounded by the
chunk (and by a few small sketches per column), not by the table; the result is the table's in one piece.

Row numbers in messages are 1-based data rows (the header is not counted).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd

from pipelines.atomic import write_json
from pipelines.config import IngestParams
from pipelines.errors import PipelineInputError
from pipelines.modalities.sources import fetched, load_builtin_table
from pipelines.modalities.tables.balance import distribution_line, imbalance_warning, label_distribution
from pipelines.modalities.tables.chunks import TableChunks
from pipelines.modalities.tables.columns import binary_positive, profile_lines
from pipelines.modalities.tables.ingest_plan import plan_table, scan_table
from pipelines.modalities.tables.ingest_scan import Distinct
from pipelines.modalities.tables.ingest_write import write_table

RAW_TABLE = "table.parquet"
PROFILE = "profile.json"
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
