"""Images as arrays: MNIST IDX files (gzipped or not), NumPy .npz, scikit-learn's digits; and the channel
and size conversions of such arrays."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np

from pipelines.errors import PipelineInputError
from pipelines.modalities.sources import fetched

LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R 601-2, as Pillow converts RGB to "L"
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
    x = as_nchw(x, source)
    if y.ndim != 1 or len(y) != len(x):
        raise PipelineInputError(f"{source}: expected one label per image: {len(x)} images, labels of shape {y.shape}")
    if len(np.unique(y)) < 2:
        raise PipelineInputError(f"{source}: labels hold a single class; a classifier needs two or more")
    if np.issubdtype(y.dtype, np.floating) and not np.all(y == np.round(y)):
        raise PipelineInputError(f"{source}: labels must be class ids (integers or strings), got fractional values")
    return x


def as_nchw(x: np.ndarray, source: str) -> np.ndarray:
    """Images as (N, C, H, W) from (N, H, W), (N, C, H, W) or channels-last; refuses other shapes and NaN."""
    if x.ndim == 3:
        x = x[:, None]  # (N, H, W) -> (N, 1, H, W)
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = np.transpose(x, (0, 3, 1, 2))  # channels-last arrays -> (N, C, H, W)
    if x.ndim != 4:
        raise PipelineInputError(f"{source}: images must be (N, H, W) or (N, C, H, W); got shape {x.shape}")
    if np.issubdtype(x.dtype, np.floating):
        bad = ~np.isfinite(x).reshape(len(x), -1).all(axis=1)
        if bad.any():
            raise PipelineInputError(f"{source}: image {int(bad.nonzero()[0][0])} has NaN or infinite pixels")
    return x


def adapt_arrays(x: np.ndarray, channels: int | None, size: tuple[int, int] | None, source: str) -> np.ndarray:
    """(N, C, H, W) float32 -> the asked channels (RGB <-> gray) and size (bilinear); unchanged when not asked."""
    if channels and x.shape[1] != channels:
        if channels == 1 and x.shape[1] == 3:
            x = np.tensordot(x, LUMA, axes=([1], [0]))[:, None].astype(np.float32)  # Pillow's "L" weights
        elif channels == 3 and x.shape[1] == 1:
            x = np.repeat(x, 3, axis=1)
        else:
            raise PipelineInputError(f"{source}: images have {x.shape[1]} channels; cannot make {channels} of them")
    if size and tuple(x.shape[2:]) != tuple(size):
        from PIL import Image

        def resized(plane: np.ndarray) -> np.ndarray:  # mode "F": float pixels resize without rounding
            return np.asarray(Image.fromarray(plane).resize((size[1], size[0]), Image.Resampling.BILINEAR))

        x = np.stack([np.stack([resized(plane) for plane in image]) for image in x]).astype(np.float32)
    return x
