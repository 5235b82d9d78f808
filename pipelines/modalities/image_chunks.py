"""A folder of photos larger than memory, prepared in chunks of images.

Ingest leaves the originals and their index (image_files.RAW_INDEX). Prepare goes through them three times,
never holding more than a chunk of images or of index rows:

1. the index, in chunks of rows: how many photos, whether all are grayscale, their sizes (the geometry),
   and their labels (the classes, numbered in sorted order as `common.encode_classes` numbers them);
2. the photos, `chunk` at a time: each decoded and resized once (`image_files.decode`, as predict does),
   its uint8 pixels appended to an unnamed scratch file, and the training photos' pixels counted per
   channel and value (`PixelCounts`): the mean and standard deviation from those counts are exact;
3. the scratch file and the index again, a chunk at a time: pixels scaled and each photo appended to its
   split's shards (`handoffs.splits.SplitWriter`) in the index's order, as the in-memory prepare wrote them.

Memory: a chunk of photos as float32 (plus copies of the same size), the split membership (one byte a photo)
and the counts (256 a channel). Disk: the scratch file holds every photo as uint8, a quarter of the shards.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd

from pipelines.errors import PipelineInputError
from pipelines.loop_progress import reported
from pipelines.modalities.image_files import INTEGER_LABEL, RAW_INDEX, decode, pick_geometry

CHUNK_BYTES = 16 * 2**20  # a chunk's photos as float32, when prepare.chunk_images is not set
INDEX_ROWS = 8192  # index rows read at a time before the geometry (and so the chunk) is known: ~2 MiB
_INDEX_TYPES = {"file": str, "path": str, "label": str, "width": int, "height": int, "gray": bool}
_PIXEL_VALUES = np.arange(256)
_COUNT_SLICE = 1 << 20  # pixels bincount takes at a time (it works on a copy as 8-byte integers)


def chunk_size(input_shape: list[int], chunk_images: int | None) -> int:
    """Photos a chunk holds: as given, or as many as take CHUNK_BYTES as float32 (at least one)."""
    if chunk_images:
        return chunk_images
    return max(1, CHUNK_BYTES // (4 * int(np.prod(input_shape))))


def index_chunks(raw_dir: Path, rows: int, columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
    """The raw index `rows` at a time (`columns` of it, or all): file (a full path), path (as shown in
    messages), label (stripped text), width, height, gray."""
    read = pd.read_csv(raw_dir / RAW_INDEX, dtype=_INDEX_TYPES, keep_default_na=False, chunksize=rows, usecols=columns)
    for frame in read:
        if "file" in frame:
            frame["file"] = [raw_dir / f for f in frame["file"]]
        if "label" in frame:
            frame["label"] = frame["label"].str.strip()
        yield frame


@dataclass
class PixelCounts:
    """How many pixels of each channel have each value 0..255: exact and mergeable, unlike float sums."""

    channels: int
    counts: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.counts = np.zeros((self.channels, 256), np.int64)

    def add(self, pixels: np.ndarray) -> None:
        """(N, C, H, W) uint8 pixels."""
        for c in range(self.channels):
            flat = pixels[:, c].reshape(-1)
            for start in range(0, len(flat), _COUNT_SLICE):
                self.counts[c] += np.bincount(flat[start : start + _COUNT_SLICE], minlength=256)

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and population standard deviation, from exact integer sums (float64, rounded once)."""
        means, stds = [], []
        for row in self.counts:
            n = int(row.sum())
            if n == 0:
                raise ValueError("no training pixels were counted")
            total = sum(int(v) * int(k) for v, k in zip(_PIXEL_VALUES, row, strict=True))
            squares = sum(int(v) ** 2 * int(k) for v, k in zip(_PIXEL_VALUES, row, strict=True))
            means.append(float(Fraction(total, n)))
            stds.append(float(np.sqrt(float(Fraction(squares * n - total * total, n * n)))))
        return np.array(means), np.array(stds)


class PhotoChunks:
    """The photos ingest indexed, read a chunk at a time (see the module's docstring for the passes)."""

    def __init__(
        self, raw_dir: Path, channels: int | None, size: tuple[int, int] | None, chunk_images: int | None
    ) -> None:
        self.raw_dir = raw_dir
        self.n, labels, gray, sizes = 0, set(), True, {}
        for frame in index_chunks(raw_dir, INDEX_ROWS, ["path", "label", "width", "height", "gray"]):  # pass 1
            self.n += len(frame)
            labels.update(frame["label"])
            gray = gray and bool(frame["gray"].all())
            for (h, w), shown in frame.groupby(["height", "width"])["path"].first().items():
                sizes.setdefault((int(h), int(w)), shown)
        if self.n == 0:
            raise PipelineInputError(f"{raw_dir / RAW_INDEX}: the index lists no images; run ingest again")
        self.channels, self.size = pick_geometry(gray, sizes, channels, size)
        self.input_shape = [self.channels, *self.size]
        self.chunk = min(self.n, chunk_size(self.input_shape, chunk_images))
        # Integers when every label is one (so classes sort 2 before 10), as image_files.list_csv reads them.
        numeric = all(INTEGER_LABEL.fullmatch(v) for v in labels)
        values = sorted({int(v) for v in labels}) if numeric else sorted(labels)
        number = {v: i for i, v in enumerate(values)}
        self.classes = [str(v) for v in values]
        self._codes = {text: number[int(text) if numeric else text] for text in labels}

    def codes(self, labels: pd.Series) -> np.ndarray:
        """Index labels (stripped text) -> class ids."""
        return np.array([self._codes[text] for text in labels], dtype=np.int64)

    def decode_into(self, scratch: BinaryIO, counted: np.ndarray) -> PixelCounts:
        """Pass 2: decode every photo, a chunk at a time, into `scratch`; count the pixels of those `counted`."""
        counts = PixelCounts(self.channels)
        buffer = np.empty((self.chunk, *self.input_shape), np.uint8)
        start = 0
        chunks = reported(index_chunks(self.raw_dir, self.chunk), "decoding images (chunks)", -(-self.n // self.chunk))
        for frame in chunks:
            pixels = buffer[: len(frame)]
            for i, (file, shown) in enumerate(zip(frame["file"], frame["path"], strict=True)):
                pixels[i] = decode(file, self.channels, self.size, shown)
            scratch.write(memoryview(pixels).cast("B"))
            counts.add(pixels[counted[start : start + len(frame)]])
            start += len(frame)
        return counts

    def decoded(self, scratch: BinaryIO, membership: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Pass 3: (split code, uint8 pixels, class ids) of each chunk's photos of one split, in the index's order;
        `membership` holds each photo's split code. The pixels are a view of a buffer the next chunk reuses:
        one allocation for the whole pass (chunks allocated anew fragment the heap, and the peak creeps up)."""
        scratch.seek(0)
        buffer, ordered = (np.empty((self.chunk, *self.input_shape), np.uint8) for _ in range(2))
        codes = np.unique(membership)
        start = 0
        for frame in index_chunks(self.raw_dir, self.chunk):
            pixels = buffer[: len(frame)]
            if scratch.readinto(memoryview(pixels).cast("B")) != pixels.nbytes:
                raise OSError("the scratch file of decoded images ended early")
            where = membership[start : start + len(frame)]
            order = np.argsort(where, kind="stable")  # by split, in the index's order within one
            np.take(pixels, order, axis=0, out=ordered[: len(frame)])
            y = self.codes(frame["label"])[order]
            bounds = np.searchsorted(where[order], codes, side="left"), np.searchsorted(where[order], codes, "right")
            for code, lo, hi in zip(codes, *bounds, strict=True):
                if hi > lo:
                    yield int(code), ordered[lo:hi], y[lo:hi]
            start += len(frame)
