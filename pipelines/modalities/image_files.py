"""Photos as files: a folder of class subfolders (`root/<class>/*.png|jpg|jpeg`) or a CSV of `path,label`.

Ingest opens every file with Pillow (a file that is not a readable image is refused, naming it, or
skipped and counted), copies the originals into the raw folder unchanged and writes an index
(images.csv: file, path, label, width, height, gray). Decoding, channel conversion and resizing
happen in one place, `decode`, which prepare and predict share through the image preprocessor.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.errors import PipelineInputError
from pipelines.loop_progress import reported

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
RAW_INDEX = "images.csv"  # beside the copied originals in data/raw/<dataset>/
RAW_FILES = "files"
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
SHOWN_SKIPS = 20  # the skipped files named in the raw info (all of them are counted)
INTEGER_LABEL = re.compile(r"-?\d+")


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _has_idx_files(folder: Path) -> bool:
    return any(folder.glob("*idx[13]-ubyte*"))


def is_photo_source(source: str) -> bool:
    """A local folder without IDX files, or a local CSV: photos read with Pillow."""
    if "://" in source or source.startswith(("sklearn:", "python:", "statsmodels:")):
        return False
    path = Path(source).expanduser()
    return (path.is_dir() and not _has_idx_files(path)) or (path.is_file() and path.suffix.lower() == ".csv")


def list_folder(root: Path) -> list[tuple[Path, str, str]]:
    """(file, path shown in messages, label) for each image under root/<class>/ (at any depth), sorted."""
    entries = [
        (f, f"{root.name}/{f.relative_to(root).as_posix()}", sub.name)
        for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        for f in sorted(sub.rglob("*"))
        if is_image_file(f) and not any(part.startswith(".") for part in f.relative_to(root).parts)
    ]
    if not entries:
        raise PipelineInputError(
            f"{root}: expected class subfolders holding .png/.jpg/.jpeg images (root/<class>/<image>), "
            "or MNIST-style IDX files; found neither"
        )
    return entries


def _labels(values: pd.Series) -> list:
    """CSV labels as written; integers when every label is one (so classes sort 2 before 10)."""
    text = values.str.strip()
    return [int(v) for v in text] if text.map(lambda v: bool(INTEGER_LABEL.fullmatch(v))).all() else list(text)


def list_csv(csv: Path, missing: str) -> tuple[list[tuple[Path, str, object]], list[dict]]:
    """(file, path as written, label) per row of a `path,label` CSV (paths relative to the CSV), and skips."""
    try:
        table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise PipelineInputError(f"{csv}: cannot be read as a CSV of image paths: {err}") from None
    if not {"path", "label"} <= set(table.columns):
        raise PipelineInputError(
            f"{csv}: a CSV of images needs columns 'path' and 'label'; it has {list(table.columns)}"
        )
    skipped, kept = [], []
    for row, (path, label) in enumerate(zip(table["path"], table["label"], strict=True), start=2):  # row 1: header
        if not path.strip() or not label.strip():
            what = "path" if not path.strip() else "label"
            if missing != "drop":
                raise PipelineInputError(f"{csv}: row {row}: the {what} is empty (or set ingest.missing: drop)")
            skipped.append({"file": f"{csv.name} row {row}", "reason": f"empty {what}"})
            continue
        kept.append((row, path.strip(), label))
    labels = _labels(pd.Series([label for _, _, label in kept], dtype=str))
    entries = [((csv.parent / path).expanduser(), path, lab) for (_, path, _), lab in zip(kept, labels, strict=True)]
    if not entries:
        raise PipelineInputError(f"{csv}: no rows with a path and a label")
    return entries, skipped


def probe(path: Path, shown: str) -> tuple[int, int, bool]:
    """(width, height, grayscale) of a readable image; PipelineInputError naming it otherwise."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)  # phone photos: as they are shown, not as they were stored
            if im.mode in GRAY_MODES:
                return im.width, im.height, True
            rgb = np.asarray(im.convert("RGB"))
            gray = bool((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all())
            return im.width, im.height, gray
    except FileNotFoundError:
        raise PipelineInputError(f"{shown}: no such image file ({path})") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise PipelineInputError(f"{shown}: not a readable image ({type(err).__name__}: {err})") from None


def decode(path: Path, channels: int, size: tuple[int, int], shown: str | None = None) -> np.ndarray:
    """One image file -> (channels, height, width) uint8: EXIF-rotated, alpha dropped, bilinear-resized."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im).convert("L" if channels == 1 else "RGB")
            if im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.Resampling.BILINEAR)  # antialiased when shrinking
            pixels = np.asarray(im, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise PipelineInputError(f"{shown or path}: not a readable image ({type(err).__name__}: {err})") from None
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


def decode_all(paths: list[Path], channels: int, size: tuple[int, int], shown: list[str]) -> np.ndarray:
    pairs = reported(zip(paths, shown, strict=True), "decoding images", total=len(paths))
    return np.stack([decode(p, channels, size, s) for p, s in pairs])


def read_photos(source: str, missing: str) -> tuple[pd.DataFrame, list[dict], str]:
    """The readable images of a photo source (a row each: where, shown path, label, size, gray), the skips, kind."""
    path = Path(source).expanduser()
    if path.is_dir():
        entries, skipped, kind = list_folder(path), [], "image-folder"
    else:
        (entries, skipped), kind = list_csv(path, missing), "image-csv"
    rows = []
    for file, shown, label in reported(entries, "checking images"):
        try:
            width, height, gray = probe(file, shown)
        except PipelineInputError as err:
            if missing != "drop":
                raise PipelineInputError(f"{err} (or set ingest.missing: drop to skip and count such files)") from None
            skipped.append({"file": shown, "reason": str(err).removeprefix(f"{shown}: ")})
            continue
        rows.append({"source": file, "path": shown, "label": label, "width": width, "height": height, "gray": gray})
    if not rows:
        raise PipelineInputError(f"{source}: none of the {len(entries)} listed files is a readable image")
    return pd.DataFrame(rows), skipped, kind


def write_raw(photos: pd.DataFrame, out_dir: Path) -> str:
    """Copy the originals into out_dir/files/ (numbered: names may repeat across classes) + the index; sha256."""
    (out_dir / RAW_FILES).mkdir()
    digest = hashlib.sha256()
    files = []
    originals = reported(zip(photos["source"], photos["path"], photos["label"], strict=True), "copying", len(photos))
    for i, (src, shown, label) in enumerate(originals):
        name = f"{RAW_FILES}/{i:06d}{Path(src).suffix.lower()}"
        shutil.copyfile(src, out_dir / name)
        digest.update(f"{shown}\0{label}\0".encode() + hashlib.sha256((out_dir / name).read_bytes()).digest())
        files.append(name)
    index = photos.drop(columns="source").assign(file=files)
    index[["file", "path", "label", "width", "height", "gray"]].to_csv(out_dir / RAW_INDEX, index=False)
    return digest.hexdigest()


def pick_geometry(
    gray: bool, sizes: dict[tuple[int, int], str], channels: int | None, size: tuple[int, int] | None
) -> tuple[int, tuple[int, int]]:
    """Channels (given, or 1 when every image is `gray`, else 3) and (height, width) (given, or the one size);
    `sizes`: each (height, width) found, with the first image of that size (named when sizes differ)."""
    channels = channels or (1 if gray else 3)
    if size is None:
        if len(sizes) > 1:
            (h1, w1), (h2, w2) = sorted(sizes)[:2]
            raise PipelineInputError(
                f"images differ in size ({sizes[h1, w1]} is {w1}x{h1}, {sizes[h2, w2]} is {w2}x{h2}; "
                f"{len(sizes)} sizes in all): set prepare.image_size, e.g. [{h1}, {w1}]"
            )
        (h, w) = next(iter(sizes))
        size = (int(h), int(w))
    return channels, size


def list_for_predict(source: str) -> tuple[list[Path], list[str], list | None]:
    """Files to predict on: one image, a flat folder of images, class subfolders (labels) or a path,label CSV."""
    path = Path(source).expanduser()
    if path.suffix.lower() in IMAGE_SUFFIXES:
        if not path.is_file():
            raise PipelineInputError(f"{source}: no such image file")
        return [path], [path.name], None
    if path.is_file():
        return _csv_for_predict(path)
    flat = sorted(f for f in path.iterdir() if is_image_file(f))
    if flat:
        return flat, [f.name for f in flat], None
    entries = list_folder(path)
    return [e[0] for e in entries], [e[1] for e in entries], [e[2] for e in entries]


def _csv_for_predict(csv: Path) -> tuple[list[Path], list[str], list | None]:
    """A CSV of path,label, or of paths alone (no labels to keep beside the predictions)."""
    try:
        columns = pd.read_csv(csv, nrows=0).columns
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise PipelineInputError(f"{csv}: cannot be read as a CSV of image paths: {err}") from None
    if "label" in columns:
        entries, _ = list_csv(csv, "error")
        return [e[0] for e in entries], [e[1] for e in entries], [e[2] for e in entries]
    if "path" not in columns:
        raise PipelineInputError(f"{csv}: a CSV of images needs a column 'path'; it has {list(columns)}")
    paths = [p.strip() for p in pd.read_csv(csv, dtype=str, keep_default_na=False)["path"]]
    for row, shown in enumerate(paths, start=2):
        if not shown:
            raise PipelineInputError(f"{csv}: row {row}: the path is empty")
    return [(csv.parent / p).expanduser() for p in paths], paths, None
