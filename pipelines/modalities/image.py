"""Images for the CNN: folders of photos (see image_files.py), MNIST IDX files (gzipped or not), NumPy arrays,
or scikit-learn's digits.

Raw form of arrays: images.npz with `x` (N, C, H, W) uint8/float32 pixels, `y` labels, and `split`
("train"/"test") when the source has a predefined test set (MNIST's t10k). Raw form of photos: the
original files and their index (image_files.RAW_INDEX); prepare decodes and resizes them.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.config.modalities import ImageIngest, ImagePrepare
from pipelines.errors import PipelineInputError
from pipelines.handoffs.splits import SplitWriter
from pipelines.modalities.common import encode_classes, shuffled_split, write_splits
from pipelines.modalities.image_arrays import (  # noqa: F401  (read_idx, read_idx_folder: re-exported)
    adapt_arrays,
    as_nchw,
    load_source,
    read_idx,
    read_idx_folder,
    validate_images,
)
from pipelines.modalities.image_chunks import PhotoChunks
from pipelines.modalities.image_files import (
    IMAGE_SUFFIXES,
    RAW_INDEX,
    SHOWN_SKIPS,
    decode_all,
    is_photo_source,
    list_for_predict,
    read_photos,
    write_raw,
)

RAW_IMAGES = "images.npz"


def ingest(params: ImageIngest, out_dir: Path) -> dict:
    if is_photo_source(params.source):
        return ingest_photos(params, out_dir)
    x, y, split, names, info = load_source(params.source)
    x = validate_images(x, y, params.source)
    arrays = {"x": x, "y": y} | ({"split": split} if split is not None else {})
    np.savez(out_dir / RAW_IMAGES, **arrays)
    n_classes = len(np.unique(y))
    info.update(
        source=params.source,
        images=int(len(x)),
        image_shape=list(x.shape[1:]),
        task="binary" if n_classes == 2 else "multiclass",
        class_names=names,
        summary=f"{len(x)} images of {'x'.join(map(str, x.shape[1:]))} in {n_classes} classes",
    )
    return info


def ingest_photos(params: ImageIngest, out_dir: Path) -> dict:
    """A folder of class subfolders or a path,label CSV: originals copied unchanged, plus their index."""
    photos, skipped, kind = read_photos(params.source, params.missing)
    counts = photos["label"].value_counts()
    if len(counts) < 2:
        raise PipelineInputError(
            f"{params.source}: every readable image is of class {counts.index[0]!r}; a classifier needs two or more"
        )
    digest = write_raw(photos, out_dir)
    sizes = photos.groupby(["height", "width"]).size()
    channels = 1 if photos["gray"].all() else 3
    (h, w), n_classes = sizes.index[0], len(counts)
    shape = (
        f"{w}x{h}" if len(sizes) == 1 else f"{len(sizes)} sizes, {photos['width'].min()}..{photos['width'].max()} wide"
    )
    skips = f"; skipped {len(skipped)} ({', '.join(s['file'] for s in skipped[:3])}{', ...' * (len(skipped) > 3)})"
    return {
        "kind": kind,
        "sha256": digest,
        "source": params.source,
        "images": int(len(photos)),
        "image_shape": [channels, int(h), int(w)] if len(sizes) == 1 else None,
        "task": "binary" if n_classes == 2 else "multiclass",
        "class_names": None,  # the labels are the names
        "class_counts": {str(k): int(v) for k, v in sorted(counts.items(), key=lambda kv: str(kv[0]))},
        "skipped": len(skipped),
        "skipped_files": skipped[:SHOWN_SKIPS],
        "summary": f"{len(photos)} {'grayscale' if channels == 1 else 'color'} images ({shape}) in {n_classes} "
        f"classes{skips if skipped else ''}",
    }


def _raw_arrays(raw_dir: Path, params: ImagePrepare) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict]:
    """(float32 pixels, labels, predefined split or None, the preprocessor's geometry) of an images.npz."""
    with np.load(raw_dir / RAW_IMAGES) as raw:
        x, labels = raw["x"].astype(np.float32), raw["y"]
        predefined = raw["split"] if "split" in raw.files else None
    x = adapt_arrays(x, params.channels, params.size, str(raw_dir / RAW_IMAGES))
    geometry = {"image_size": list(params.size) if params.size else None, "channels": params.channels}
    return x, labels, predefined, geometry


def prepare(raw_dir: Path, ingest: ImageIngest, params: ImagePrepare, info: dict, out: Path) -> dict:
    if (raw_dir / RAW_INDEX).exists():  # photos: decoded, converted and resized here, as predict will
        return prepare_photos(raw_dir, params, out)
    x, labels, predefined, geometry = _raw_arrays(raw_dir, params)
    y, classes = encode_classes(labels)
    if info.get("class_names") and len(info["class_names"]) == len(classes):
        classes = [info["class_names"][int(c)] for c in classes]
    if predefined is not None and (predefined == "test").any():
        # Keep the source's own test set; carve validation out of its training part.
        train_pool = np.flatnonzero(predefined == "train")
        order = np.random.default_rng(params.seed).permutation(len(train_pool))
        n_val = max(1, int(round(len(train_pool) * params.val_fraction)))
        splits = {
            "train": np.sort(train_pool[order[n_val:]]),
            "val": np.sort(train_pool[order[:n_val]]),
            "test": np.flatnonzero(predefined == "test"),
        }
    else:
        splits = shuffled_split(len(x), params)
    prep = ImagePreprocessor(list(x.shape[1:]), **geometry).fit(x[splits["train"]], params.normalize)
    arrays = {name: (prep.transform(x[idx]), y[idx]) for name, idx in splits.items()}
    meta = {"input_shape": list(x.shape[1:]), "classes": classes, "preprocessing": prep.state}
    write_splits(out, arrays)  # held in memory whole: np.load reads an .npz member whole
    return meta


def prepare_photos(raw_dir: Path, params: ImagePrepare, out: Path) -> dict:
    """Photos in chunks of `prepare.chunk_images` (image_chunks.py): the same splits, statistics (exact) and
    shards as a prepare holding them all, in memory bounded by the chunk."""
    photos = PhotoChunks(raw_dir, params.channels, params.size, params.chunk_images)
    codes = {"train": 0, "val": 1, "test": 2}
    membership = np.empty(photos.n, np.int8)  # each photo's split
    for name, idx in shuffled_split(photos.n, params).items():
        membership[idx] = codes[name]
    prep = ImagePreprocessor(photos.input_shape, image_size=list(photos.size), channels=photos.channels)
    with tempfile.TemporaryFile(dir=out) as scratch:  # unnamed: gone when closed, whatever happens
        counts = photos.decode_into(scratch, membership == codes["train"])
        prep.fit_statistics(*counts.mean_std(), normalize=params.normalize)
        writers = {code: SplitWriter(out / name) for name, code in codes.items()}
        scaled = np.empty((photos.chunk, *photos.input_shape), np.float32)  # reused, as the chunks' pixels are
        for code, pixels, y in photos.decoded(scratch, membership):
            writers[code].write(prep.transform(pixels, out=scaled[: len(pixels)]), y)
    for writer in writers.values():
        writer.close()
    return {"input_shape": photos.input_shape, "classes": photos.classes, "preprocessing": prep.state}


class ImagePreprocessor:
    """Images to the network's input: channels and size (when set), then one mean/std per channel from training.

    Photo files are decoded to `input_shape` (channels, height, width) by the same function prepare uses;
    arrays (IDX, npz) are converted and resized only when the model was prepared with channels/image_size.
    """

    kind = "image"

    def __init__(
        self,
        input_shape: list[int],
        mean: list[float] | None = None,
        std: list[float] | None = None,
        image_size: list[int] | None = None,
        channels: int | None = None,
    ):
        self.input_shape, self.mean, self.std = list(input_shape), mean, std
        self.image_size, self.channels = image_size, channels

    def fit(self, train_x: np.ndarray, normalize: bool = True) -> ImagePreprocessor:
        return self.fit_statistics(train_x.mean(axis=(0, 2, 3)), train_x.std(axis=(0, 2, 3)), normalize)

    def fit_statistics(self, mean: np.ndarray, std: np.ndarray, normalize: bool = True) -> ImagePreprocessor:
        """The training split's per-channel mean and standard deviation (kept as float32), or 0 and 1."""
        channels = len(mean)
        mean = np.asarray(mean, np.float32) if normalize else np.zeros(channels, np.float32)
        std = np.asarray(std, np.float32) if normalize else np.ones(channels, np.float32)
        std = np.where(std < 1e-8, 1.0, std).astype(np.float32)
        self.mean, self.std = mean.tolist(), std.tolist()  # float32 values: exact through JSON
        return self

    def transform(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """(N, C, H, W) pixels -> scaled float32 (into `out`, of x's shape, when given)."""
        mean, std = np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)
        # A float32 copy, then scaled in place: one array of the batch's size, not three.
        scaled = x.astype(np.float32) if out is None else out
        if out is not None:
            np.copyto(out, x)
        scaled -= mean[None, :, None, None]
        scaled /= std[None, :, None, None]
        return scaled

    def inverse(self, y: np.ndarray) -> np.ndarray:
        return y  # class ids: nothing to undo

    @property
    def state(self) -> dict:
        geometry = {"image_size": self.image_size, "channels": self.channels}
        return {"kind": self.kind, "input_shape": self.input_shape, "mean": self.mean, "std": self.std} | geometry

    @classmethod
    def from_state(cls, state: dict) -> ImagePreprocessor:
        return cls(state["input_shape"], state["mean"], state["std"], state.get("image_size"), state.get("channels"))

    def read_inputs(self, source: str, column: str | None = None) -> tuple[np.ndarray, pd.DataFrame]:
        """Images from any source ingest reads, or one image file -> scaled inputs, and their labels (if any)."""
        if is_photo_source(source) or Path(source).suffix.lower() in IMAGE_SUFFIXES:
            files, shown, labels = list_for_predict(source)
            frame = pd.DataFrame({"file": shown} | ({"label": labels} if labels else {}))
            return self.from_encoded(files, shown), frame
        x, y, _, _, _ = load_source(source)
        return self.from_arrays(validate_images(x, y, source), source), pd.DataFrame({"label": y})

    def from_arrays(self, x: np.ndarray, source: str) -> np.ndarray:
        """Pixel arrays ((N, H, W), (N, C, H, W) or channels-last) -> scaled inputs of the model's shape."""
        x = as_nchw(x, source).astype(np.float32)
        size = tuple(self.image_size) if self.image_size else None
        x = adapt_arrays(x, self.channels, size, source)
        if list(x.shape[1:]) != self.input_shape:
            raise PipelineInputError(f"{source}: images are {list(x.shape[1:])} but the model takes {self.input_shape}")
        return self.transform(x)

    def from_encoded(self, files: list, shown: list[str]) -> np.ndarray:
        """Image files (paths or open binary files: PNG, JPEG...) -> scaled inputs, decoded as prepare decodes."""
        c, h, w = self.input_shape
        return self.transform(decode_all(files, c, (h, w), shown).astype(np.float32))
