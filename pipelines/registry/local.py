"""The local backend of the model registry (a directory), and `open_registry`.

Layout:

    <root>/<model name>/versions/v<N>/model.pt    weights-only checkpoint
    <root>/<model name>/versions/v<N>/card.json   metrics, params, lineage, sha256
    <root>/<model name>/aliases.json              {"production": 3, ...}

A version is assembled in a staging directory and published with one
rename(2), which fails if v<N> exists: two concurrent registrations each get
their own number, and a crash leaves at most an invisible staging directory.
The interface and the names shared by both backends are in registry/base.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipelines.atomic import write_json

# The shared names are re-exported: callers import the registry from one place.
from pipelines.registry.base import (  # noqa: F401
    _VERSION_DIR,
    ALIASES_NAME,
    CARD_NAME,
    CHECKPOINT_NAME,
    LATEST,
    AliasUpdate,
    ModelRegistry,
    ModelVersion,
    RegistryError,
    VersionSpec,
    check_alias_name,
    check_model_name,
    sha256_file,
    verify_checkpoint,
)

STAGING_PREFIX = ".staging-"


class LocalModelRegistry(ModelRegistry):
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.location = str(self.root)

    def _versions_dir(self, name: str) -> Path:
        return self.root / check_model_name(name) / "versions"

    def list_models(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if (p / "versions").is_dir()) if self.root.is_dir() else []

    def list_versions(self, name: str) -> list[int]:
        d = self._versions_dir(name)
        if not d.is_dir():
            return []
        return sorted(int(m.group(1)) for p in d.iterdir() if (m := _VERSION_DIR.match(p.name)))

    def register(self, name: str, checkpoint: str | Path, card: dict[str, Any]) -> ModelVersion:
        versions = self._versions_dir(name)
        versions.mkdir(parents=True, exist_ok=True)
        _sweep_stale_staging(versions)
        with _staging(versions) as staging:
            shutil.copyfile(checkpoint, staging / CHECKPOINT_NAME)
            digest = sha256_file(staging / CHECKPOINT_NAME)
            while True:
                number = (self.list_versions(name) or [0])[-1] + 1
                full_card = {**card, "name": name, "version": number, "sha256": digest}
                (staging / CARD_NAME).write_text(json.dumps(full_card, indent=2, sort_keys=True) + "\n")
                try:
                    os.rename(staging, versions / f"v{number}")  # atomic; fails if v<N> exists
                except OSError:
                    if (versions / f"v{number}").exists():
                        continue  # another registration took this number first
                    raise
                path = versions / f"v{number}"
                return ModelVersion(name, number, path, full_card, str(path))

    def _read_card(self, name: str, version: int) -> dict[str, Any]:
        path = self._versions_dir(name) / f"v{version}" / CARD_NAME
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise self._missing_version(name, version) from None

    def _materialize(self, name: str, version: int, card: dict[str, Any], verify: bool) -> ModelVersion:
        path = self._versions_dir(name) / f"v{version}"
        mv = ModelVersion(name, version, path, card, str(path))
        if verify:
            verify_checkpoint(mv.checkpoint, card)
        return mv

    def aliases(self, name: str) -> dict[str, int]:
        try:
            return json.loads((self.root / check_model_name(name) / ALIASES_NAME).read_text())
        except FileNotFoundError:
            return {}

    @contextlib.contextmanager
    def _alias_lock(self, name: str) -> Iterator[None]:
        # flock on a separate lock file: aliases.json itself is replaced by rename, so
        # a lock on it would be a lock on a file that is no longer the current one.
        model_dir = self.root / check_model_name(name)
        model_dir.mkdir(parents=True, exist_ok=True)
        with open(model_dir / ".aliases.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield  # released when the file is closed

    def _update_aliases(self, name: str, update: AliasUpdate) -> None:
        with self._alias_lock(name):
            for leftover in (self.root / name).glob(f".{ALIASES_NAME}.*.tmp"):
                leftover.unlink(missing_ok=True)  # a write killed before its rename: no writer holds it now
            current = self.aliases(name)
            new = update(dict(current))
            if new is not None and new != current:
                write_json(self.root / name / ALIASES_NAME, new)  # temp + os.replace: readers never see half


@contextlib.contextmanager
def _staging(versions: Path) -> Iterator[Path]:
    """A staging directory held under an flock for as long as its registration runs.

    The lock file `.staging-X.lock` is created and locked before the directory `.staging-X` exists, so a
    later sweep can tell a live registration (its lock is held) from one that was killed (nobody holds it).
    The directory is made with mkdir, so the published version has the mode the umask gives."""
    while True:
        fd, lock_name = tempfile.mkstemp(prefix=STAGING_PREFIX, suffix=".lock", dir=versions)
        fcntl.flock(fd, fcntl.LOCK_EX)
        with contextlib.suppress(FileNotFoundError):
            if os.stat(lock_name).st_ino == os.fstat(fd).st_ino:
                break
        os.close(fd)  # a concurrent sweep took the lock file between its creation and our lock: take another
    lock_path = Path(lock_name)
    staging = lock_path.with_suffix("")
    try:
        staging.mkdir()
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already when it was published (renamed)
        lock_path.unlink(missing_ok=True)
        os.close(fd)


def _sweep_stale_staging(versions: Path) -> None:
    """Remove what killed registrations left (staging directories, half-copied checkpoints); keep live ones."""
    for entry in versions.glob(f"{STAGING_PREFIX}*"):
        lock_path = entry if entry.suffix == ".lock" else entry.with_name(entry.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR)
        except FileNotFoundError:  # a directory whose registration was killed after removing its lock
            shutil.rmtree(entry, ignore_errors=True)
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a registration in progress
        else:
            shutil.rmtree(lock_path.with_suffix(""), ignore_errors=True)
            lock_path.unlink(missing_ok=True)
        finally:
            os.close(fd)


def open_registry(
    location: str | Path, *, endpoint_url: str | None = None, cache_dir: str | Path | None = None
) -> ModelRegistry:
    """The registry at `location`: 's3://bucket/prefix' (any S3-compatible endpoint) or a local path."""
    text = str(location)
    if text.startswith("s3://"):
        from pipelines.registry.s3 import S3ModelRegistry  # lazy: boto3 only when needed

        return S3ModelRegistry(text, endpoint_url=endpoint_url, cache_dir=cache_dir)
    if "://" in text:
        raise RegistryError(f"unsupported registry location {text!r}: use a local path or s3://bucket/prefix")
    return LocalModelRegistry(Path(text).expanduser())


def open_configured(location: str) -> ModelRegistry:
    """The registry `register.registry` names: s3://..., or a path relative to the project root."""
    from pipelines import paths

    return open_registry(location if "://" in location else paths.absolute(location))
