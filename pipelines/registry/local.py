"""The model registry: trained, versioned checkpoints with their metrics and lineage.

(Not to be confused with models.catalogue, the catalogue of architectures.)

One interface, `ModelRegistry`, two backends: `LocalModelRegistry` (a directory,
below) and `S3ModelRegistry` (any S3-compatible store, in model_registry_s3).
`open_registry(location)` picks one from the location.

Every version is immutable: its card (metrics, params, lineage) records the
sha256 of its checkpoint, and `get` refuses a checkpoint whose bytes no longer
match. Aliases ("production", "staging", ...) are the only mutable state: one
small JSON object per model, always replaced whole and under a lock (local) or
a compare-and-swap (S3), so two concurrent promotions never lose an update.

Layout of the local backend:

    <root>/<model name>/versions/v<N>/model.pt    weights-only checkpoint
    <root>/<model name>/versions/v<N>/card.json   metrics, params, lineage, sha256
    <root>/<model name>/aliases.json              {"production": 3, ...}

A version is assembled in a staging directory and published with one
rename(2), which fails if v<N> exists: two concurrent registrations each get
their own number, and a crash leaves at most an invisible staging directory.
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from models.task_kinds import TASKS
from pipelines.atomic import atomic_path, write_json
from pipelines.handoffs import card_metrics

CHECKPOINT_NAME = "model.pt"
CARD_NAME = "card.json"
ALIASES_NAME = "aliases.json"
LATEST = "latest"  # a pseudo-alias: always the highest version number

_VERSION_DIR = re.compile(r"^v(\d+)$")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# An alias starts with a letter so that it can never be mistaken for a version number.
_ALIAS_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")

VersionSpec = int | str | None  # a version number, an alias, or None for the latest
Mode = Literal["max", "min"]
Policy = Literal["better", "always"]
AliasUpdate = Callable[[dict[str, int]], dict[str, int] | None]


class RegistryError(RuntimeError):
    pass


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


@dataclass(frozen=True)
class Promotion:
    """What `promote` did, and why."""

    promoted: bool
    name: str
    alias: str
    version: int
    previous: int | None  # the version the alias pointed to before
    reason: str
    metric: str | None = None
    value: float | None = None  # the candidate's test metric
    previous_value: float | None = None

    def __str__(self) -> str:
        verb = (
            f"{self.alias} -> v{self.version}"
            if self.promoted
            else f"{self.alias} stays at " + (f"v{self.previous}" if self.previous else "(unset)")
        )
        return f"{self.name}: {'promoted' if self.promoted else 'not promoted'}: {verb} ({self.reason})"


def _test_metric(card: dict[str, Any], metric: str) -> float:
    """The card's `test/<metric>`; cards of every version (metrics nested per split before v3) compare."""
    key = metric if "/" in metric else f"test/{metric}"
    try:
        return float(card_metrics(card)[key])
    except (KeyError, TypeError, ValueError):
        raise RegistryError(
            f"{card.get('name')} v{card.get('version')} has no test metric {metric!r} in its card "
            f"(card['metrics'][{key!r}]); pass another metric, or force the promotion"
        ) from None


def _metric_mode(card: dict[str, Any], metric: str) -> Mode:
    """Which way `metric` improves: the card says so, or the task's primary metric does."""
    if card.get("mode") in ("max", "min") and card.get("primary_metric") == metric:
        return card["mode"]
    kind = TASKS.get(card.get("task") or "")
    if kind is not None and metric == kind.primary_metric:
        return kind.mode
    raise RegistryError(f"cannot tell whether a higher or lower {metric!r} is better; pass mode='max' or 'min'")


def decide_promotion(
    name: str,
    alias: str,
    version: int,
    card: dict[str, Any],
    current: int | None,
    current_card: dict[str, Any] | None,
    primary_metric: str | None = None,
    mode: Mode | None = None,
    policy: Policy = "better",
) -> Promotion:
    """Whether `alias` should move from `current` to `version`: a pure function of the two cards."""
    if policy not in ("better", "always"):
        raise RegistryError(f"unknown promotion policy {policy!r}: use 'better' or 'always'")
    if mode not in (None, "max", "min"):
        raise RegistryError(f"unknown mode {mode!r}: use 'max' or 'min'")
    base = dict(name=name, alias=alias, version=version, previous=current)
    if current == version:
        return Promotion(False, reason=f"{alias} already points to v{version}", **base)
    if policy == "always":
        return Promotion(True, reason="forced (policy='always')", **base)
    if current is None or current_card is None:
        return Promotion(True, reason=f"{alias} was not set", **base)
    metric = primary_metric or card.get("primary_metric")
    if not metric:
        raise RegistryError(f"{name} v{version}: the card names no primary_metric; pass primary_metric=")
    mode = mode or _metric_mode(card, metric)
    new, old = _test_metric(card, metric), _test_metric(current_card, metric)
    better = new > old if mode == "max" else new < old
    relation = ">" if new > old else "<" if new < old else "="
    reason = (
        f"test {metric} {new:.6g} {relation} {old:.6g} of v{current}, "
        f"{'higher' if mode == 'max' else 'lower'} is better"
    )
    return Promotion(better, reason=reason, metric=metric, value=new, previous_value=old, **base)


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
    ) -> Promotion:
        """Point `alias` at `version` if its test metric beats the alias's current version.

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
                    name, alias, version, cards[version], current, cards.get(current), primary_metric, mode, policy
                )
            ]
            return {**aliases, alias: version} if outcome[0].promoted else None

        self._update_aliases(name, update)
        return outcome[0]


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
                path = versions / f"v{number}"
                return ModelVersion(name, number, path, full_card, str(path))
        finally:
            shutil.rmtree(staging, ignore_errors=True)

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
            current = self.aliases(name)
            new = update(dict(current))
            if new is not None and new != current:
                write_json(self.root / name / ALIASES_NAME, new)  # temp + os.replace: readers never see half


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
