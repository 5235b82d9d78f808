"""The model registry's interface: trained, versioned checkpoints with their metrics and lineage.

(Not to be confused with models.catalogue, the catalogue of architectures.)

One interface, `ModelRegistry` (here), two backends: `LocalModelRegistry` (a directory,
registry/local.py) and `S3ModelRegistry` (any S3-compatible store, registry/s3.py).
`open_registry(location)` (registry/local.py) picks one from the location.

Every version is immutable: its card (metrics, params, lineage) records the
sha256 of its checkpoint, and `get` refuses a checkpoint whose bytes no longer
match. Aliases ("production", "staging", ...) are the only mutable state: one
small JSON object per model, always replaced whole and under a lock (local) or
a compare-and-swap (S3), so two concurrent promotions never lose an update.
"""

from __future__ import annotations

import abc
import hashlib
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.atomic import atomic_path, write_json
from pipelines.registry.errors import RegistryError
from pipelines.registry.promotion import Mode, Policy, Promotion, decide_promotion

CHECKPOINT_NAME = "model.pt"
CARD_NAME = "card.json"
ALIASES_NAME = "aliases.json"
LATEST = "latest"  # a pseudo-alias: always the highest version number

_VERSION_DIR = re.compile(r"^v(\d+)$")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# An alias starts with a letter so that it can never be mistaken for a version number.
_ALIAS_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")

VersionSpec = int | str | None  # a version number, an alias, or None for the latest
AliasUpdate = Callable[[dict[str, int]], dict[str, int] | None]


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_model_name(name: str) -> str:
    # Names become path components and S3 key segments: no '/', no '..'.
    if not isinstance(name, str) or not _MODEL_NAME.match(name):
        raise RegistryError(
            f"invalid model name {name!r}: use letters, digits, '_', '.', '-' (not starting with '.', '_' or '-')"
        )
    return name


def check_alias_name(alias: str) -> str:
    if not isinstance(alias, str) or not _ALIAS_NAME.match(alias) or alias == LATEST:
        raise RegistryError(
            f"invalid alias {alias!r}: start with a letter, then letters, digits, "
            f"'_', '.', '-' ({LATEST!r} is reserved)"
        )
    return alias


def verify_checkpoint(path: Path, card: dict[str, Any], where: str | None = None) -> None:
    """Raise unless the file's sha256 is the card's; `where` names the file in the message."""
    actual = sha256_file(path)
    if actual != card["sha256"]:
        raise RegistryError(
            f"{where or path}: sha256 {actual[:12]}... does not match the registry entry {card['sha256'][:12]}... "
            f"({card.get('name')} v{card.get('version')}); refusing to load a tampered checkpoint"
        )


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    path: Path  # local directory holding the checkpoint (S3: a verified local cache entry)
    card: dict[str, Any]
    uri: str = ""  # where the version lives in the registry (a directory or an s3:// prefix)

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_NAME


class ModelRegistry(abc.ABC):
    """The interface both backends implement; version resolution, aliases and promotion live here."""

    location: str

    # -- what a backend provides ------------------------------------------------------------

    @abc.abstractmethod
    def list_models(self) -> list[str]: ...

    @abc.abstractmethod
    def list_versions(self, name: str) -> list[int]: ...

    @abc.abstractmethod
    def register(self, name: str, checkpoint: str | Path, card: dict[str, Any]) -> ModelVersion:
        """Publish a new immutable version: all of it or, after a crash, nothing visible."""

    @abc.abstractmethod
    def aliases(self, name: str) -> dict[str, int]: ...

    @abc.abstractmethod
    def _read_card(self, name: str, version: int) -> dict[str, Any]: ...

    @abc.abstractmethod
    def _materialize(self, name: str, version: int, card: dict[str, Any], verify: bool) -> ModelVersion:
        """A local, optionally verified, copy of the version's checkpoint."""

    @abc.abstractmethod
    def _update_aliases(self, name: str, update: AliasUpdate) -> None:
        """Atomically apply `update` (current aliases -> new aliases, or None for no change).

        `update` may be called more than once (after a lost compare-and-swap), so it
        must only compute, never act."""

    # -- shared -------------------------------------------------------------------------------

    def resolve(self, name: str, version: VersionSpec = None) -> int:
        """A version number from a number, an alias, or None/'latest' for the newest version."""
        check_model_name(name)
        if isinstance(version, int) and not isinstance(version, bool):
            return version
        if version is None or version == LATEST:
            known = self.list_versions(name)
            if not known:
                raise RegistryError(f"model {name!r} has no versions in registry {self.location}")
            return known[-1]
        if isinstance(version, str):
            aliases = self.aliases(name)
            if version not in aliases:
                raise RegistryError(f"model {name!r} has no alias {version!r}; aliases: {aliases or 'none'}")
            return aliases[version]
        raise RegistryError(f"a version is a number, an alias or None, not {version!r}")

    def _missing_version(self, name: str, version: int) -> RegistryError:
        known = self.list_versions(name)
        if not known:
            return RegistryError(f"model {name!r} has no versions in registry {self.location}")
        return RegistryError(f"model {name!r} has no version {version}; versions: {known}")

    def get_card(self, name: str, version: VersionSpec = None) -> dict[str, Any]:
        """The version's card alone (cheap: no checkpoint is read or downloaded)."""
        return self._read_card(name, self.resolve(name, version))

    def get(self, name: str, version: VersionSpec = None, verify: bool = True) -> ModelVersion:
        """A version with a local checkpoint file, verified against the card's sha256."""
        number = self.resolve(name, version)
        return self._materialize(name, number, self._read_card(name, number), verify)

    def download(self, name: str, version: VersionSpec, dest_dir: str | Path) -> ModelVersion:
        """Copy a verified checkpoint and its card into dest_dir (model.pt, card.json)."""
        mv = self.get(name, version, verify=True)
        dest = Path(dest_dir)
        with atomic_path(dest / CHECKPOINT_NAME) as tmp:
            shutil.copyfile(mv.checkpoint, tmp)
        write_json(dest / CARD_NAME, mv.card)
        return ModelVersion(mv.name, mv.version, dest, mv.card, mv.uri)

    # -- publishing a run's model: idempotent, one kind of model per name ------------------------

    def line_signature(self, name: str) -> tuple[dict[str, Any] | None, str]:
        """The signature the name's versions share (the newest card's), and which versions hold it."""
        versions = self.list_versions(name)
        if not versions:
            return None, "no versions"
        held = f"v{versions[0]}" if len(versions) == 1 else f"v{versions[0]}-v{versions[-1]}"
        return self._read_card(name, versions[-1]).get("signature"), held

    def check_model_line(self, name: str, signature: dict[str, Any], dataset: str) -> None:
        """Refuse (ModelLineMismatch, exit 2) a model of another task, class set or input schema under `name`."""
        from pipelines.registry.model_line import check_line

        held, versions = self.line_signature(check_model_name(name))
        check_line(name, held, versions, signature, dataset)

    def find_published(self, name: str, sha256: str, data: dict[str, Any] | None) -> int | None:
        """The version that already holds this checkpoint trained on this data (a re-run after a crash), or None."""
        for number in reversed(self.list_versions(name)):
            card = self._read_card(name, number)
            if card.get("sha256") == sha256 and (card.get("lineage") or {}).get("data") == data:
                return number
        return None

    def publish(
        self, name: str, checkpoint: str | Path, card: dict[str, Any], dataset: str
    ) -> tuple[ModelVersion, bool]:
        """(the version, whether it is new): register `checkpoint` unless a version already holds it.

        Re-running register after a crash (or a DVC stage that ran again on the same outputs) finds the
        version it published before, by checkpoint sha256 and data lineage, instead of publishing a copy.
        A model of another kind than the name's versions is refused before anything is written."""
        if card.get("signature") is not None:
            self.check_model_line(name, card["signature"], dataset)
        existing = self.find_published(name, sha256_file(checkpoint), (card.get("lineage") or {}).get("data"))
        if existing is not None:
            return self.get(name, existing, verify=True), False
        return self.register(name, checkpoint, card), True

    def set_alias(self, name: str, alias: str, version: int) -> None:
        check_alias_name(alias)
        self._read_card(name, version)  # the version must exist
        self._update_aliases(name, lambda aliases: {**aliases, alias: version})

    def promote(
        self,
        name: str,
        version: int,
        alias: str = "production",
        primary_metric: str | None = None,
        mode: Mode | None = None,
        policy: Policy = "better",
        champion: dict[str, Any] | None = None,
    ) -> Promotion:
        """Point `alias` at `version` if its test metric beats the alias's current version.

        `champion`: the alias's version scored on this version's test split (see decide_promotion).

        The metric and its direction come from the cards (card["primary_metric"],
        card["mode"] or the task's primary metric) unless given. policy="always"
        moves the alias regardless. The decision is taken inside the alias update,
        so it is made against the alias's value at the moment of the write."""
        check_alias_name(alias)
        cards = {version: self._read_card(name, version)}
        outcome: list[Promotion] = []

        def update(aliases: dict[str, int]) -> dict[str, int] | None:
            current = aliases.get(alias)
            if current is not None and current not in cards:
                cards[current] = self._read_card(name, current)
            outcome[:] = [
                decide_promotion(
                    name,
                    alias,
                    version,
                    cards[version],
                    current,
                    cards.get(current),
                    primary_metric,
                    mode,
                    policy,
                    champion,
                )
            ]
            return {**aliases, alias: version} if outcome[0].promoted else None

        self._update_aliases(name, update)
        return outcome[0]
