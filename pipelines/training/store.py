"""The run's storage (a local path, a shared path or s3://), through pyarrow.fs so that every kind works.

A stage's run keeps, beside Ray's own resume checkpoints, one folder per candidate:

    <storage>/<run>/candidates/<candidate>/state.json        status, error, kept epochs, history (rank 0)
    <storage>/<run>/candidates/<candidate>/epoch_<e>/checkpoint.ckpt   its best `keep` epochs (Lightning)
    <storage>/<run>/candidates/<candidate>/placement/rank<r>.json      where each rank ran it

The workers write them, the driver reads them after the fit.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any


def run_uri(storage_path: str, run_name: str) -> str:
    return f"{storage_path.rstrip('/')}/{run_name}"


def candidate_uri(run: str, candidate: str) -> str:
    """candidate is 'dataset/name': one folder level, readable."""
    return f"{run}/candidates/{candidate.replace('/', '--')}"


def _fs(uri: str):
    import pyarrow.fs

    if "://" not in uri:
        return pyarrow.fs.LocalFileSystem(), str(Path(uri).absolute())
    return pyarrow.fs.FileSystem.from_uri(uri)


def write_json(uri: str, data: Any) -> None:
    """Write then move: a reader never sees half a file (S3 writes are whole objects anyway)."""
    fs, path = _fs(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with fs.open_output_stream(path + ".tmp") as out:
        out.write(json.dumps(data).encode())
    fs.move(path + ".tmp", path)


def read_json(uri: str, default: Any = None) -> Any:
    fs, path = _fs(uri)
    try:
        with fs.open_input_stream(path) as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return default


def list_json(uri: str) -> list[Any]:
    """Every *.json directly under uri (none if it does not exist)."""
    import pyarrow.fs

    fs, root = _fs(uri)
    infos = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    out = []
    for info in sorted(infos, key=lambda i: i.path):
        if info.path.endswith(".json"):
            with fs.open_input_stream(info.path) as f:
                out.append(json.loads(f.read()))
    return out


def upload(local_file: Path, uri: str) -> None:
    fs, path = _fs(uri)
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with open(local_file, "rb") as src, fs.open_output_stream(path + ".tmp") as out:
        shutil.copyfileobj(src, out, 1 << 20)
    fs.move(path + ".tmp", path)


def download(uri: str, local_file: Path) -> Path:
    """A local copy of uri (a local uri is used where it lies)."""
    if "://" not in uri:
        return Path(uri)
    fs, path = _fs(uri)
    local_file.parent.mkdir(parents=True, exist_ok=True)
    with fs.open_input_stream(path) as src, open(local_file, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
    return local_file


def delete_file(uri: str) -> None:
    fs, path = _fs(uri)
    try:
        fs.delete_file(path)
    except (FileNotFoundError, OSError):
        pass


def delete_dir(uri: str) -> None:
    fs, path = _fs(uri)
    try:
        fs.delete_dir(path)
    except (FileNotFoundError, OSError):
        pass
