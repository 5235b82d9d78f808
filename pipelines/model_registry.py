"""The model registry: trained, versioned checkpoints with their metrics and lineage.

(Not to be confused with models.catalogue, the catalogue of architectures.)

Layout of the local backend:

    <root>/<model name>/versions/v<N>/model.pt    weights-only checkpoint
    <root>/<model name>/versions/v<N>/card.json   metrics, params, lineage, sha256

A version is assembled in a staging directory and published with one
rename(2), which fails if v<N> exists: two concurrent registrations each get
their own number, and a crash leaves at most an invisible staging directory.
Published versions are never modified.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHECKPOINT_NAME = "model.pt"
CARD_NAME = "card.json"
_VERSION_DIR = re.compile(r"^v(\d+)$")


class RegistryError(RuntimeError):
    pass


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    path: Path  # directory of the version
    card: dict[str, Any]

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_NAME


class LocalModelRegistry:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def _versions_dir(self, name: str) -> Path:
        return self.root / name / "versions"

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
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=versions))
        try:
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
                return ModelVersion(name, number, versions / f"v{number}", full_card)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def get(self, name: str, version: int | None = None, verify: bool = True) -> ModelVersion:
        known = self.list_versions(name)
        if not known:
            raise RegistryError(f"model {name!r} has no versions in registry {self.root}")
        number = known[-1] if version is None else version
        if number not in known:
            raise RegistryError(f"model {name!r} has no version {number}; versions: {known}")
        path = self._versions_dir(name) / f"v{number}"
        card = json.loads((path / CARD_NAME).read_text())
        mv = ModelVersion(name, number, path, card)
        if verify:
            actual = sha256_file(mv.checkpoint)
            if actual != card["sha256"]:
                raise RegistryError(
                    f"{mv.checkpoint}: sha256 {actual[:12]}... does not match the registry entry {card['sha256'][:12]}...; refusing to load a tampered checkpoint"
                )
        return mv
