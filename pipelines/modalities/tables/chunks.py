"""A table larger than memory, read in chunks of rows, each typed as a one-shot read types the whole file.

pandas infers a column's type per chunk: integers with a gap only in a later chunk are int64 there and
float64 here, True/False with a gap are bool or object. So the file is read twice, one chunk at a time:
the first pass keeps only each chunk's column types; the second reads the rows again and casts each chunk
to the type the whole file has (floats where any chunk had a gap, text where any chunk had text). Memory
stays bounded by the chunk size, and the rows are the values `read_table` would give.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.errors import PipelineInputError

DEFAULT_CHUNK_ROWS = 102_400  # 100 batches of 1024 rows: tens of MB for a table of a few dozen columns
PARQUET, CSV = (".parquet", ".pq"), (".csv", ".csv.gz", ".txt")
PARQUET_READ_BUFFER = 2**20  # bytes a column's pages are read at a time


def _kind(values: pd.Series) -> str:
    """How pandas typed one chunk's column: int, float, empty (all gaps), bool, object, str, or the dtype's name."""
    dtype = values.dtype
    if isinstance(dtype, pd.StringDtype):
        return "str"
    if dtype == np.bool_:
        return "bool"
    if pd.api.types.is_integer_dtype(dtype) and isinstance(dtype, np.dtype):
        return "int"
    if dtype == np.float64:
        return "empty" if values.isna().all() else "float"
    return "object" if dtype == np.dtype(object) else str(dtype)


def _whole_file_type(kinds: set[str]) -> str | None:
    """The type a one-shot read gives a column its chunks typed as `kinds`; None: as each chunk reads it."""
    if len(kinds) == 1:
        return None
    if kinds <= {"int", "float", "empty"}:
        return "float64"  # a gap (or a fraction) anywhere makes the whole column float
    if kinds <= {"bool", "object", "empty"}:
        return "object"  # True/False with gaps: Python bools and NaN
    return "str"  # any text in the column: every value is read as its text


def _raw_chunks(path: Path, chunk_rows: int, text_columns: list[str]) -> Iterator[pd.DataFrame]:
    suffixes = "".join(path.suffixes[-2:]).lower()
    if suffixes.endswith(PARQUET):
        import pyarrow as pa
        import pyarrow.parquet as pq

        # pre_buffer off, reads buffered: the reader decodes a chunk's rows, not the whole row group it falls in
        # (a file written with pandas' defaults has row groups of 1M rows: 430 MiB of a 26-column table).
        source = pq.ParquetFile(path, pre_buffer=False, buffer_size=PARQUET_READ_BUFFER)
        for batch in source.iter_batches(batch_size=chunk_rows):
            yield pa.Table.from_batches([batch]).to_pandas()  # the file's pandas metadata types it as read_parquet
    elif suffixes.endswith(CSV):
        yield from pd.read_csv(path, chunksize=chunk_rows, dtype={c: str for c in text_columns} or None)
    else:
        raise PipelineInputError(f"unsupported file type {suffixes or '(none)'}; expected .csv, .csv.gz or .parquet")


class TableChunks:
    """The rows of a CSV/Parquet file, `chunk_rows` at a time, typed as `sources.read_table` types the whole
    file; iterable more than once (the column types are found on the first iteration only). Each chunk's
    index is its rows' 0-based positions in the file. Errors name the source as the user wrote it."""

    def __init__(self, path: Path, shown_as: str, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> None:
        self.path, self.shown_as, self.chunk_rows = path, shown_as, chunk_rows
        self.targets: dict[str, str | None] | None = None

    def _column_targets(self) -> dict[str, str | None]:
        kinds: dict[str, set[str]] = {}
        for chunk in _raw_chunks(self.path, self.chunk_rows, []):
            for column in chunk.columns:
                kinds.setdefault(column, set()).add(_kind(chunk[column]))
        if not kinds:
            raise pd.errors.EmptyDataError("no columns")
        return {column: _whole_file_type(k) for column, k in kinds.items()}

    def __iter__(self) -> Iterator[pd.DataFrame]:
        try:
            if self.targets is None:
                self.targets = self._column_targets()
            text = [c for c, t in self.targets.items() if t == "str"]
            casts = {c: t for c, t in self.targets.items() if t in ("float64", "object")}
            start = 0
            for chunk in _raw_chunks(self.path, self.chunk_rows, text):
                chunk.index = pd.RangeIndex(start, start + len(chunk))
                start += len(chunk)
                yield chunk.astype(casts) if casts else chunk
        except pd.errors.EmptyDataError:
            raise PipelineInputError(
                f"{self.shown_as}: the file is empty (expected a header row and data rows)"
            ) from None
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as err:
            if isinstance(err, PipelineInputError):
                raise PipelineInputError(f"{self.shown_as}: {err}") from None
            raise PipelineInputError(f"{self.shown_as}: cannot be read as a table: {err}") from None


def read_table_chunks(path: Path, shown_as: str, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """One pass over `TableChunks(path, shown_as, chunk_rows)`."""
    return iter(TableChunks(path, shown_as, chunk_rows))
