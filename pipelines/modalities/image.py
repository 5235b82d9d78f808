"""Images for the CNN: MNIST IDX files (gzipped or not), NumPy arrays, or scikit-learn's digits.

Raw form: images.npz with `x` (N, C, H, W) uint8/float32 pixels, `y` labels, and
`split` ("train"/"test") when the source has a predefined test set (MNIST's t10k).
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.config import IngestParams, PrepareParams
from pipelines.errors import PipelineInputError
from pipelines.modalities.common import encode_classes, shuffled_split
from pipelines.modalities.sources import fetched

RAW_IMAGES = "images.npz"
IDX_DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (the MNIST format): magic 0x0000 | dtype code | ndim, then big-endian dims."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise PipelineInputError(f"{path}: cannot be read as an IDX file: {err}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_DTYPES:
        raise PipelineInputError(f"{path}: not an IDX file (bad magic number {data[:4].hex() or 'empty'})")
    dtype, ndim = np.dtype(IDX_DTYPES[data[2]]), data[3]
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) - offset != expected:
        raise PipelineInputError(
            f"{path}: IDX header says {dims} ({expected} bytes) but the file holds {len(data) - offset}"
        )
    return np.frombuffer(data, dtype=dtype, offset=offset).reshape(dims)


def _idx_pair(folder: Path, prefix: str) -> tuple[np.ndarray, np.ndarray] | None:
    images = sorted(folder.glob(f"{prefix}*images*idx3-ubyte*"))
    labels = sorted(folder.glob(f"{prefix}*labels*idx1-ubyte*"))
    if not images and not labels:
        return None
    if not images or not labels:
        raise PipelineInputError(
            f"{folder}: found {prefix} {'images' if images else 'labels'} but not the "
            f"matching {'labels' if images else 'images'} IDX file"
        )
    x, y = read_idx(images[0]), read_idx(labels[0])
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise PipelineInputError(f"{images[0]}: expected (N, H, W) images and N labels, got {x.shape} and {y.shape}")
    return x, y


def read_idx_folder(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An MNIST-style folder: train-* and t10k-* image/label IDX pairs (the t10k pair is the test split)."""
    parts = [
        (name, pair) for name, prefix in (("train", "train"), ("test", "t10k")) if (pair := _idx_pair(folder, prefix))
    ]
    if not parts:
        raise PipelineInputError(f"{folder}: no *images-idx3-ubyte / *labels-idx1-ubyte IDX files found")
    x = np.concatenate([p[0] for _, p in parts])
    y = np.concatenate([p[1] for _, p in parts])
    split = np.concatenate([np.full(len(p[1]), name) for name, p in parts])
    return x, y, split


def load_source(source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[str] | None, dict]:
    """(images, labels, predefined split or None, class names or None, provenance)."""
    if source == "sklearn:digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        return digits.images.astype(np.float32), digits.target, None, None, {"kind": "sklearn"}
    path = Path(source).expanduser()
    if "://" not in source and path.is_dir():
        x, y, split = read_idx_folder(path)
        names = FASHION_MNIST_CLASSES if "fashion" in str(path).lower() and int(y.max()) < 10 else None
        return x, y, split, names, {"kind": "idx-folder"}
    if source.startswith("sklearn:"):
        raise PipelineInputError(f"ingest.source: {source}: unknown built-in image set; use sklearn:digits")
    with fetched(source) as local:
        digest = hashlib.sha256(local.read_bytes()).hexdigest()
        if local.name.endswith(".npz"):
            with np.load(local) as arrays:
                keys = set(arrays.files)
                xk = next((k for k in ("x", "images") if k in keys), None)
                yk = next((k for k in ("y", "labels") if k in keys), None)
                if not xk or not yk:
                    raise PipelineInputError(
                        f"{source}: a .npz of images needs arrays 'x' (or 'images') and 'y' (or 'labels'); "
                        f"it has {sorted(keys)}"
                    )
                return arrays[xk], arrays[yk], None, None, {"kind": "npz", "sha256": digest}
        if "idx3-ubyte" in local.name:
            labels = Path(str(local).replace("images", "labels").replace("idx3", "idx1"))
            if not labels.exists():
                raise PipelineInputError(f"{source}: the labels file {labels.name} is not beside the images")
            return read_idx(local), read_idx(labels), None, None, {"kind": "idx", "sha256": digest}
    raise PipelineInputError(
        f"ingest.source: {source}: expected sklearn:digits, an MNIST-style IDX folder or file, or a .npz with x and y"
    )


def validate_images(x: np.ndarray, y: np.ndarray, source: str) -> np.ndarray:
    """Return images as (N, C, H, W); refuse shapes, NaN and labels that cannot be classes."""
    if x.ndim == 3:
        x = x[:, None]  # (N, H, W) -> (N, 1, H, W)
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = np.transpose(x, (0, 3, 1, 2))  # channels-last arrays -> (N, C, H, W)
    if x.ndim != 4:
        raise PipelineInputError(f"{source}: images must be (N, H, W) or (N, C, H, W); got shape {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise PipelineInputError(f"{source}: expected one label per image: {len(x)} images, labels of shape {y.shape}")
    if np.issubdtype(x.dtype, np.floating):
        bad = ~np.isfinite(x).reshape(len(x), -1).all(axis=1)
        if bad.any():
            raise PipelineInputError(f"{source}: image {int(bad.nonzero()[0][0])} has NaN or infinite pixels")
    if len(np.unique(y)) < 2:
        raise PipelineInputError(f"{source}: labels hold a single class; a classifier needs two or more")
    if np.issubdtype(y.dtype, np.floating) and not np.all(y == np.round(y)):
        raise PipelineInputError(f"{source}: labels must be class ids (integers or strings), got fractional values")
    return x


def ingest(params: IngestParams, out_dir: Path) -> dict:
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


def prepare(raw_dir: Path, ingest: IngestParams, params: PrepareParams, info: dict) -> tuple[dict, dict]:
    with np.load(raw_dir / RAW_IMAGES) as raw:
        x, labels = raw["x"].astype(np.float32), raw["y"]
        predefined = raw["split"] if "split" in raw.files else None
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
    prep = ImagePreprocessor(list(x.shape[1:])).fit(x[splits["train"]], params.normalize)
    arrays = {name: (prep.transform(x[idx]), y[idx]) for name, idx in splits.items()}
    meta = {"input_shape": list(x.shape[1:]), "classes": classes, "preprocessing": prep.state}
    return arrays, meta


class ImagePreprocessor:
    """Pixel scaling fitted on the training images: one mean/std per channel."""

    kind = "image"

    def __init__(self, input_shape: list[int], mean: list[float] | None = None, std: list[float] | None = None):
        self.input_shape, self.mean, self.std = list(input_shape), mean, std

    def fit(self, train_x: np.ndarray, normalize: bool = True) -> ImagePreprocessor:
        channels = train_x.shape[1]
        mean = train_x.mean(axis=(0, 2, 3)) if normalize else np.zeros(channels, np.float32)
        std = train_x.std(axis=(0, 2, 3)) if normalize else np.ones(channels, np.float32)
        std = np.where(std < 1e-8, 1.0, std).astype(np.float32)
        self.mean, self.std = mean.tolist(), std.tolist()  # float32 values: exact through JSON
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        """(N, C, H, W) pixels -> scaled float32."""
        mean, std = np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)
        return ((x - mean[None, :, None, None]) / std[None, :, None, None]).astype(np.float32)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        return y  # class ids: nothing to undo

    @property
    def state(self) -> dict:
        return {"kind": self.kind, "input_shape": self.input_shape, "mean": self.mean, "std": self.std}

    @classmethod
    def from_state(cls, state: dict) -> ImagePreprocessor:
        return cls(state["input_shape"], state["mean"], state["std"])

    def read_inputs(self, source: str, column: str | None = None) -> tuple[np.ndarray, pd.DataFrame]:
        """Images from any source ingest reads -> scaled inputs, and their labels (if any) as a table."""
        x, y, _, _, _ = load_source(source)
        x = validate_images(x, y, source).astype(np.float32)
        if list(x.shape[1:]) != self.input_shape:
            raise PipelineInputError(f"{source}: images are {list(x.shape[1:])} but the model takes {self.input_shape}")
        return self.transform(x), pd.DataFrame({"label": y})
