"""Prepare a table in chunks: seeded split, the preprocessing fitted on the training rows, shards for every split.

The raw table (ingest's table.parquet) is read `prepare.chunk_rows` rows at a time, never whole:

1. the label pass: the class names (every split's labels; classes are numbered in sorted order);
2. the fit (`TablePreprocessor.fit_chunks`): one pass over the training rows, two with median fills, plus
   the regression target's moments in the first;
3. the write pass: each chunk encoded, its rows appended to their split's shards (`handoffs.splits`) and the
   test rows, as ingest typed them, to test_inputs.parquet (another version's preprocessing encodes them too).

Memory: a chunk, the split's membership (one byte per row), and the fit's statistics (`fit_stats`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.config import IngestParams, PrepareParams
from pipelines.handoffs.splits import SplitWriter
from pipelines.modalities.common import shuffled_membership
from pipelines.modalities.tables.encoding import TablePreprocessor
from pipelines.modalities.tables.entries import target_values
from pipelines.modalities.tables.fit_stats import Moments
from pipelines.modalities.tables.ingest import RAW_TABLE

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
TEST_INPUTS = "test_inputs.parquet"


def _typed(info: dict, features: list[str]) -> tuple[dict[str, str], dict[str, int], dict[str, list[str]]]:
    """Column types, gap counts and binary pairs from ingest (a source.json from before typed columns: numbers)."""
    types = info.get("column_types") or {}
    # In the table's column order (source.json's keys may come back sorted).
    types = {c: types.get(c, "number") for c in features}
    return types, info.get("missing", {}), info.get("binary", {})


class RawChunks:
    """The raw table's rows, `rows` at a time, as pandas frames labelled with their rows in the table."""

    def __init__(self, path: Path, rows: int) -> None:
        self.path, self.rows = path, rows
        # Read a column chunk at a time, on this thread: pyarrow's read-ahead and reader threads hold more than a
        # chunk (measured: tens of MiB more at 100k rows), and one core encodes as fast as it reads.
        self.file = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
        self.n = self.file.metadata.num_rows
        self.columns = self.file.schema_arrow.names

    def batches(self, columns: list[str] | None = None) -> Iterator[tuple[int, pa.RecordBatch]]:
        start = 0
        for batch in self.file.iter_batches(batch_size=self.rows, columns=columns, use_threads=False):
            yield start, batch
            start += batch.num_rows

    def frames(self, columns: list[str] | None = None, rows: np.ndarray | None = None) -> Iterator[pd.DataFrame]:
        """Each chunk as a frame (only the rows where `rows`, a mask over the table, is true, when given)."""
        for start, batch in self.batches(columns):
            frame = as_frame(start, batch)
            yield frame if rows is None else frame[rows[start : start + len(frame)]]


def as_frame(start: int, batch: pa.RecordBatch) -> pd.DataFrame:
    """A chunk as pandas, its rows labelled with their rows in the table: messages name the table's row."""
    frame = batch.to_pandas()
    frame.index = pd.RangeIndex(start, start + len(frame))
    return frame


def _class_names(chunks: RawChunks, label: str) -> list:
    """Every label value of the table, in the order `common.encode_classes` numbers them."""
    values: set = set()
    for frame in chunks.frames([label]):
        values.update(frame[label].to_numpy().tolist())
    return sorted(values, key=lambda v: (str(type(v)), v))


def prepare(raw_dir: Path, ingest: IngestParams, params: PrepareParams, info: dict, out: Path) -> dict:
    task, label = info["task"], ingest.label
    chunks = RawChunks(raw_dir / RAW_TABLE, getattr(params, "chunk_rows", 65536))
    features = [c for c in chunks.columns if c != label]
    types, missing, binary = _typed(info, features)
    membership = shuffled_membership(chunks.n, params, SPLIT_CODES)  # each row's split
    train_rows = membership == SPLIT_CODES["train"]

    prep = TablePreprocessor(list(types))
    scaling = getattr(params, "target_scaling", "standard")
    target = Moments()

    passes: list[int] = []

    def train_frames() -> Iterator[pd.DataFrame]:
        """The training rows; the first pass also gathers the regression target's moments."""
        first_pass = not passes
        passes.append(1)
        for frame in chunks.frames(rows=train_rows):
            if first_pass and task == "regression":
                target.add(target_values(frame[label].to_numpy(np.float64), scaling))
            yield frame

    prep.fit_chunks(
        train_frames,
        types,
        missing,
        binary,
        normalize=params.normalize,
        fill=getattr(params, "fill", "median"),
        max_onehot=getattr(params, "max_onehot", 10),
    )
    if task == "regression":
        prep.fit_target_moments(target, scaling)
        classes = None
    else:
        names = _class_names(chunks, label)
        codes, classes = {v: i for i, v in enumerate(names)}, [str(c) for c in names]
    _write_splits(chunks, membership, prep, label, features, codes if classes else None, out)
    entries = prep.entries()
    meta = {
        "features": entries,
        "in_features": len(entries),
        "input_shape": [len(entries)],
        "label": label,
        "classes": classes,
        "preprocessing": prep.state,
    }
    if prep.embeddings():
        meta["embeddings"] = prep.embeddings()
    return meta


def _write_splits(
    chunks: RawChunks,
    membership: np.ndarray,
    prep: TablePreprocessor,
    label: str,
    features: list[str],
    codes: dict | None,
    out: Path,
) -> None:
    """Encode every chunk; append its rows to their split's shards, and its test rows to test_inputs.parquet."""
    writers = {name: SplitWriter(out / name) for name in SPLIT_CODES}
    # The test rows as ingest typed them, without pandas' description of the whole table (it names the label).
    schema = chunks.file.schema_arrow
    inputs_schema = pa.schema([schema.field(c) for c in features])
    inputs = pq.ParquetWriter(out / TEST_INPUTS, inputs_schema)
    try:
        for start, batch in chunks.batches():
            frame = as_frame(start, batch)
            x = prep.transform(frame, str(chunks.path))
            y_raw = frame[label]
            if codes is None:
                y = prep.scale_target(y_raw.to_numpy(np.float64))
            else:
                y = np.array([codes[v] for v in y_raw.to_numpy().tolist()], dtype=np.int64)
            where = membership[start : start + len(frame)]
            for name, code in SPLIT_CODES.items():
                rows = where == code
                if rows.any():
                    writers[name].write(x[rows], y[rows])
            test = where == SPLIT_CODES["test"]
            if test.any():
                table = pa.Table.from_batches([batch]).filter(pa.array(test)).select(features)
                inputs.write_table(table.cast(inputs_schema))
    finally:
        inputs.close()
    for writer in writers.values():
        writer.close()
