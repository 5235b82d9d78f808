"""The bytes DVC hands a stage, or pushes, are the bytes dvc.lock records; dvc.lock's one reader.

DVC trusts its state database: a file whose inode, mtime and size are unchanged is taken to hold the md5
recorded for it, and a read-only cache object is taken to be intact (dvc_data's LocalHashFileDB.check).
A bit flipped on disk, or an edit through a hard-linked cache with the mtime restored, is then invisible:
`dvc status` says up to date, a stage trains on the damaged bytes, and `dvc push` sends them under the
good md5. The checks here hash the bytes themselves with dvc_data's own hashing and tree building
(DVC's .dir format), with no state database, and compare with dvc.lock:

- `verify_inputs`: a stage's DVC-tracked inputs (stages/cli.py calls it before the stage reads them);
- `verify_cache`: the cache objects of stages' outputs, before the flow pushes them.

A mismatch raises DamagedData (exit 1): the file, both hashes, and how to recover.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipelines import paths
from pipelines.errors import DamagedData

LOCK_READS = 5  # a parallel chain's `dvc repro` may be rewriting dvc.lock (DVC writes it in place): read again
# Every stage reads dvc.lock: libyaml's loader takes ~9 ms for the default run's, the pure-Python one ~70 ms.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class Recorded:
    stage: str  # the stage whose output it is, e.g. prepare@tabular
    path: str  # the output's path, as dvc.lock writes it
    md5: str  # a file's md5, or a directory's `<md5>.dir`


def locked_stages(lock_file: str | Path = paths.DVC_LOCK) -> dict[str, dict]:
    """The stages dvc.lock records ({} when there is no dvc.lock yet): the one reader of that file."""
    lock_file = Path(lock_file)
    for attempt in range(LOCK_READS):
        if not lock_file.exists():
            return {}
        try:
            return (yaml.load(lock_file.read_text(), Loader=_LOADER) or {}).get("stages", {}) or {}
        except yaml.YAMLError:
            if attempt == LOCK_READS - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
    return {}


def _checkable(out: dict) -> bool:
    """An output DVC 3 recorded (`hash: md5`); DVC 2's entries hash text as md5-dos2unix, in another cache."""
    return out.get("hash") == "md5" and bool(out.get("md5"))


def recorded_output(path: Path, root: Path = Path("."), locked: dict[str, dict] | None = None) -> Recorded | None:
    """What dvc.lock records for the output at `path` (relative to root), or None if no stage records it."""
    for stage, entry in (locked if locked is not None else locked_stages(root / paths.DVC_LOCK)).items():
        for out in entry.get("outs", []):
            if Path(out["path"]) == path and _checkable(out):
                return Recorded(stage, out["path"], out["md5"])
    return None


def _build(path: Path):
    """DVC's object for `path`, hashed from its bytes with no state DB: its hash_info is the md5 DVC would record
    (a directory's `<md5>.dir`, its Tree listing each file's md5)."""
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db.local import LocalHashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    fs = LocalFileSystem()
    # A fresh LocalHashFileDB has no state database (StateNoop): every file is read; dry_run writes nothing.
    _, _, obj = build(LocalHashFileDB(fs, os.path.abspath(path)), os.path.abspath(path), fs, "md5", dry_run=True)
    return obj


def verify_inputs(inputs: list[Path], root: Path = Path(".")) -> None:
    """Refuse (DamagedData) if an input dvc.lock records as a stage output holds other bytes than recorded.

    Inputs dvc.lock does not record (a stage run outside DVC, before its producer was ever locked) and
    missing ones (the stage itself says what is missing) are not checked.
    """
    locked = locked_stages(root / paths.DVC_LOCK)
    for path in inputs:
        recorded = recorded_output(path, root, locked)
        if recorded is None or not (root / path).exists():
            continue
        built = _build(root / path)
        if built.hash_info.value != recorded.md5:
            raise DamagedData(_describe_input(root, recorded, built))


def verify_cache(stages: list[str], root: Path = Path(".")) -> int:
    """Refuse (DamagedData) if a cache object of these stages' recorded outputs is damaged; returns how many
    objects were checked. Objects not in the cache are left to `dvc push` (it reports what is missing).
    """
    odb = _cache_odb(root)
    locked = locked_stages(root / paths.DVC_LOCK)
    checked = 0
    for stage in stages:
        for out in locked.get(stage, {}).get("outs", []):
            if not _checkable(out):
                continue
            for oid, name in _objects(odb, out["md5"], out["path"]):
                actual = _object_hash(odb, oid)
                checked += actual is not None
                if actual is not None and actual != oid.removesuffix(".dir"):
                    raise DamagedData(
                        f"{name}: its cache object {odb.oid_to_path(oid)} is damaged (md5 of its bytes {actual}, "
                        f"dvc.lock records {oid} for {stage}): not pushed. Remove the object and {name}, "
                        f"then `dvc repro -f {stage}` to remake it (or `dvc pull {stage}` if the remote has it)"
                    )
    return checked


# -- what a mismatch names ---------------------------------------------------------------------


def _cache_odb(root: Path):
    """The project's local cache (`dvc cache dir`) as an object database without a state database."""
    from dvc.repo import Repo
    from dvc_data.hashfile.db.local import LocalHashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    with Repo(str(root)) as repo:
        return LocalHashFileDB(LocalFileSystem(), repo.cache.local.path)


def _object_hash(odb, oid: str) -> str | None:
    """The md5 of a cache object's bytes (None when the cache lacks it)."""
    from dvc_data.hashfile.hash import file_md5

    path = odb.oid_to_path(oid)
    return file_md5(path, odb.fs) if os.path.exists(path) else None


def _recorded_files(odb, oid: str) -> dict[str, str] | None:
    """A recorded directory's files {relpath: md5} from its .dir object, if the cache has it intact."""
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.tree import Tree

    if _object_hash(odb, oid) != oid.removesuffix(".dir"):
        return None
    tree = Tree.load(odb, HashInfo("md5", oid))
    return {"/".join(key): hi.value for key, _, hi in tree}


def _objects(odb, oid: str, out_path: str) -> list[tuple[str, str]]:
    """(object id, the workspace file it holds) of one output: a directory's .dir object and its files."""
    # A damaged (or missing) .dir object lists no files: it comes first, and is what a check names.
    files = (_recorded_files(odb, oid) if oid.endswith(".dir") else None) or {}
    return [(oid, out_path)] + [(md5, f"{out_path}/{rel}") for rel, md5 in sorted(files.items())]


def _describe_input(root: Path, recorded: Recorded, built) -> str:
    """One line: which file differs, its md5 and dvc.lock's, whether the cache object is damaged too, what to do."""
    odb = _cache_odb(root)
    name, expected, got = recorded.path, recorded.md5, built.hash_info.value
    if recorded.md5.endswith(".dir") and got.endswith(".dir"):
        files = _recorded_files(odb, recorded.md5)
        if files is not None:
            here = {"/".join(key): hi.value for key, _, hi in built}
            differ = sorted(rel for rel in files.keys() | here.keys() if files.get(rel) != here.get(rel))
            if differ:
                rel = differ[0]
                name, expected, got = f"{recorded.path}/{rel}", files.get(rel, "none"), here.get(rel, "missing")
    cache_path = odb.oid_to_path(expected)
    cache_md5 = _object_hash(odb, expected) if expected != "none" else None
    if cache_md5 is not None and cache_md5 != expected.removesuffix(".dir"):
        fix = (
            f"its cache object {cache_path} is damaged too (md5 {cache_md5}): remove both, then "
            f"`dvc pull {recorded.stage}` (from the remote) or `dvc repro -f {recorded.stage}`"
        )
    else:
        fix = (
            f"remove it and run `dvc checkout {recorded.path}` (or `dvc pull {recorded.stage}`); "
            f"`dvc commit {recorded.stage}` instead if it was changed on purpose"
        )
    return (
        f"{name}: damaged: md5 of its bytes is {got}, dvc.lock records {expected} for {recorded.stage}'s output "
        f"(DVC trusts a file whose size and mtime did not change); {fix}"
    )
