"""The prepared splits on disk: each split a folder of Parquet shards of bounded size, read through here only.

Layout: data/prepared/<ds>/<split>/part-00000.parquet, part-00001.parquet, ... Each shard holds two columns:

    x   one row per sample, the sample's array flattened (a fixed-size list of float32 or int64)
    y   its target: a scalar, or a fixed-size list when the target is an array (regression, horizons)

and its per-sample shapes in the Parquet schema's metadata (`x_shape`, `y_shape`), so a shard describes itself.

Why Parquet rather than NumPy shards: Ray Data reads Parquet natively (`ray.data.read_parquet`, by file and
row group, fixed-size lists arrive as (rows, width) tensors), pyarrow writes it incrementally with a bounded
buffer, and any node (or S3) can read one shard without the others. A shard is written once and never
appended to, so DVC tracks the split folder as before.

Every reader of a prepared split goes through here: `read_split` (all rows, in memory), `iter_split` and
`iter_targets` (bounded chunks; `SplitChunks`, the same again on every pass), `split_parts` (the files, for
Ray Data); `split_rows` and `split_nbytes` come from the shards' footers without reading any data.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SHARD_BYTES = 64 * 2**20  # a shard's in-memory size at most (one sample more when a sample is bigger)
ROW_GROUP_BYTES = 8 * 2**20  # Parquet row groups: what one read (and one Ray Data block) holds at least
PART = "part-{:05d}.parquet"


def _column(values: np.ndarray) -> pa.Array:
    """(rows, *shape) -> a flat column (shape ()) or a fixed-size list column of prod(shape) entries per row."""
    if values.ndim == 1:
        return pa.array(values)
    width = math.prod(values.shape[1:])
    return pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(values).reshape(-1)), width)


def _array(column: pa.ChunkedArray, shape: list[int]) -> np.ndarray:
    """A column read back as (rows, *shape)."""
    combined = column.combine_chunks()  # writable: torch.from_numpy (training) shares the memory
    if not shape:
        return combined.to_numpy(zero_copy_only=False, writable=True)
    flat = combined.flatten().to_numpy(zero_copy_only=False, writable=True)
    return flat.reshape(len(combined), *shape)


class SplitWriter:
    """Appends (x, y) chunks to a split folder as shards of at most `shard_bytes` (in memory)."""

    def __init__(self, folder: Path, shard_bytes: int = SHARD_BYTES) -> None:
        self.folder, self.shard_bytes = Path(folder), shard_bytes
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._shards = 0
        self._in_shard = 0  # rows in the open shard
        self._shapes: tuple[list[int], list[int]] | None = None

    def write(self, x: np.ndarray, y: np.ndarray) -> None:
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
        shapes = (list(x.shape[1:]), list(y.shape[1:]))
        if self._shapes is None:
            self._shapes = shapes
        elif shapes != self._shapes:
            raise ValueError(f"{self.folder}: a chunk of per-sample shapes {shapes}, after {self._shapes}")
        row_bytes = max(1, x[:1].nbytes + y[:1].nbytes)
        per_shard = max(1, self.shard_bytes // row_bytes)
        group_rows = max(1, min(per_shard, ROW_GROUP_BYTES // row_bytes))
        start = 0
        while start < len(x):
            if self._writer is None or self._in_shard >= per_shard:
                self._open(x, y)
            take = min(len(x) - start, per_shard - self._in_shard)
            part = slice(start, start + take)
            table = pa.table({"x": _column(x[part]), "y": _column(y[part])})
            self._writer.write_table(table.replace_schema_metadata(self._metadata()), row_group_size=group_rows)
            self._in_shard += take
            self.rows += take
            start += take

    def _metadata(self) -> dict[bytes, bytes]:
        x_shape, y_shape = self._shapes
        return {b"x_shape": json.dumps(x_shape).encode(), b"y_shape": json.dumps(y_shape).encode()}

    def _open(self, x: np.ndarray, y: np.ndarray) -> None:
        if self._writer is not None:
            self._writer.close()
        schema = pa.schema([("x", _column(x[:1]).type), ("y", _column(y[:1]).type)], metadata=self._metadata())
        self._writer = pq.ParquetWriter(self.folder / PART.format(self._shards), schema)
        self._shards += 1
        self._in_shard = 0

    def close(self) -> int:
        """Closes the last shard; returns the rows written. A split of no rows is refused (prepare never writes one)."""
        if self._writer is None:
            raise ValueError(f"{self.folder}: no rows were written")
        self._writer.close()
        self._writer = None
        return self.rows

    def __enter__(self) -> SplitWriter:
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is None:
            self.close()
        elif self._writer is not None:  # the caller's atomic folder is dropped: nothing half-written survives
            self._writer.close()


def write_split(folder: Path, x: np.ndarray, y: np.ndarray, shard_bytes: int = SHARD_BYTES) -> int:
    """A split held in memory, written as shards."""
    with SplitWriter(folder, shard_bytes) as writer:
        writer.write(x, y)
    return writer.rows


def split_parts(folder: Path) -> list[Path]:
    """The split's shards, in order (their order is the split's row order)."""
    parts = sorted(Path(folder).glob("part-*.parquet"))
    if not parts:
        raise FileNotFoundError(f"{folder}: no prepared shards (part-*.parquet); run the prepare stage")
    return parts


def split_shapes(folder: Path) -> tuple[list[int], list[int]]:
    """(per-sample x shape, per-sample y shape) of a split, from its first shard's schema."""
    meta = pq.read_schema(split_parts(folder)[0]).metadata
    return json.loads(meta[b"x_shape"]), json.loads(meta[b"y_shape"])


def split_rows(folder: Path) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in split_parts(folder))


def split_nbytes(folder: Path) -> int:
    """What the split takes in memory as arrays (rows x the bytes of one sample), from the footers alone."""
    x_shape, y_shape = split_shapes(folder)
    schema = pq.read_schema(split_parts(folder)[0])

    def sample_bytes(name: str, shape: list[int]) -> int:
        kind = schema.field(name).type
        kind = kind.value_type if pa.types.is_fixed_size_list(kind) else kind
        return kind.bit_width // 8 * math.prod(shape)

    return split_rows(folder) * (sample_bytes("x", x_shape) + sample_bytes("y", y_shape))


def iter_split(folder: Path, rows: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The split in order, in chunks of `rows` samples, the last one what is left (memory: two chunks, or a row
    group, ROW_GROUP_BYTES)."""
    x_shape, y_shape = split_shapes(folder)
    for batch in _batches(folder, rows, ["x", "y"]):
        yield _array(batch.column("x"), x_shape), _array(batch.column("y"), y_shape)


def iter_targets(folder: Path, rows: int = 65536) -> Iterator[np.ndarray]:
    """The split's targets alone, in order, in chunks (the inputs are not read)."""
    _, y_shape = split_shapes(folder)
    for batch in _batches(folder, rows, ["y"]):
        yield _array(batch.column("y"), y_shape)


def _batches(folder: Path, rows: int, columns: list[str]) -> Iterator[pa.Table]:
    """Chunks of exactly `rows` rows across the shards (the last one: what is left), so a chunk's rows do not
    depend on where prepare cut the shards (evaluate's network sees the batches a whole-split read would)."""
    held = None  # rows read but not yet yielded: less than a chunk, and the batch just read
    for part in split_parts(folder):
        # On this thread, without read-ahead: pyarrow's reader threads and buffers hold more than a row group.
        shard = pq.ParquetFile(part, pre_buffer=False, buffer_size=1 << 20)
        for batch in shard.iter_batches(batch_size=rows, columns=columns, use_threads=False):
            table = pa.Table.from_batches([batch])
            held = table if held is None else pa.concat_tables([held, table])  # no copy: chunks side by side
            while held.num_rows >= rows:
                yield held.slice(0, rows)
                held = held.slice(rows)
    if held is not None and held.num_rows:
        yield held


Arrays = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class SplitChunks:
    """A prepared split as (x, y) chunks of `rows` samples, read again from its shards on every pass."""

    folder: Path
    rows: int = 65536

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return iter_split(self.folder, self.rows)

    def targets(self) -> Iterator[np.ndarray]:
        return iter_targets(self.folder, self.rows)

    @classmethod
    def in_batches(cls, folder: Path, batch_size: int, chunk_bytes: int = SHARD_BYTES) -> SplitChunks:
        """Chunks of whole batches (a network then sees a whole-split run's batches) of about `chunk_bytes` of
        samples (default: a shard's size), at least one batch."""
        sample = max(1, split_nbytes(folder) // max(1, split_rows(folder)))
        return cls(folder, max(1, chunk_bytes // sample // batch_size) * batch_size)

    @property
    def samples(self) -> int:
        """The split's rows, from the footers."""
        return split_rows(self.folder)


SplitData = Arrays | SplitChunks  # a split whole in memory, or read in chunks


def chunks_of(split: SplitData) -> Iterable[Arrays]:
    """A split's (x, y) chunks: one when it is held in memory."""
    return [split] if isinstance(split, tuple) else split


def read_split(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The whole split in memory: (x, y) as prepare made them."""
    x_shape, y_shape = split_shapes(folder)
    table = pq.read_table(split_parts(folder))
    return _array(table.column("x"), x_shape), _array(table.column("y"), y_shape)


def batch_arrays(x_flat: np.ndarray, y: np.ndarray, shapes: tuple[list[int], list[int]]) -> tuple:
    """A Ray Data batch's columns ((rows, width) tensors or arrays) in the per-sample shapes of the split."""
    x_shape, y_shape = shapes
    return x_flat.reshape(len(x_flat), *x_shape), y.reshape(len(y), *y_shape)
