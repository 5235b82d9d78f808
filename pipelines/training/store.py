"""The run's storage (a local path, a shared path or s3://), through pyarrow.fs so that every kind works.

A stage's run keeps, beside Ray's own resume checkpoints, one folder per candidate:

    <storage>/<run>/candidates/<candidate>/state.json        status, error, kept epochs, history (rank 0)
    <storage>/<run>/candidates/<candidate>/epoch_<e>/checkpoint.ckpt   its best `keep` epochs (Lightning)
    <storage>/<run>/candidates/<candidate>/placement/rank<r>.json      where each rank ran it
    <storage>/<run>/attempt.json                                  which driver's attempt may write

The workers write them, the driver reads them after the fit. Each fit of a run (a driver, or the same
run again after a killed one) begins a new attempt; a worker writes only while its attempt is the run's
current one (`Fence`). A worker of a killed driver may train on for a moment before Ray stops it: without
the fence it could overwrite state.json or evict a checkpoint after the new attempt read them.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ATTEMPT_FILE = "attempt.json"


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
    """Remove a file if it is there (gone already is fine)."""
    _delete(uri, "delete_file")


def delete_dir(uri: str) -> None:
    """Remove a folder and everything in it if it is there (gone already is fine)."""
    _delete(uri, "delete_dir")


def _delete(uri: str, method: str) -> None:
    fs, path = _fs(uri)
    try:
        getattr(fs, method)(path)
    except (FileNotFoundError, OSError):
        pass


class StaleAttempt(RuntimeError):
    """A worker of an earlier attempt tried to write after a newer attempt of its run began."""


def begin_attempt(run: str) -> str:
    """Make a new attempt the run's current one (the driver, before its fit starts); its id for the workers."""
    attempt = uuid.uuid4().hex[:12]
    write_json(f"{run}/{ATTEMPT_FILE}", {"attempt": attempt, "started_at": round(time.time(), 3)})
    return attempt


@dataclass(frozen=True)
class Fence:
    """Lets a worker write to its run only while its attempt is the run's current one.

    `check()` reads attempt.json before each group of writes (an epoch's state and checkpoints): a stale
    worker stops with StaleAttempt before it writes. A new attempt reads what it resumes from only after
    its worker group started (seconds after `begin_attempt`), far longer than a check-then-write takes.
    attempt None: an unfenced run (a job fitted by hand, a search trial in a folder of its own).

    raylet: in a Ray worker, the pid of its node's raylet (the worker's parent). When a driver is killed with its
    local Ray instance, the raylet dies at once but its workers notice only ~1.5 s later; trained on till then,
    a fast candidate's last epochs could be reported and committed as if supervised. A worker whose parent
    changed stops before its next write."""

    run: str
    attempt: str | None = None
    raylet: int | None = None

    def check(self) -> None:
        if self.raylet is not None and os.getppid() != self.raylet:
            raise StaleAttempt(
                f"{self.run}: this worker's raylet (pid {self.raylet}) is gone: it stops without writing"
            )
        if self.attempt is None:
            return
        current = (read_json(f"{self.run}/{ATTEMPT_FILE}") or {}).get("attempt")
        if current != self.attempt:
            raise StaleAttempt(
                f"{self.run}: attempt {self.attempt} was superseded by attempt {current}: "
                "this worker stops without writing"
            )
