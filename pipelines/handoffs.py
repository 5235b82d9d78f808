"""What the stages hand each other, typed: prepared meta, train summary, checkpoint info, evaluation report, card.

Every model carries `schema_version`. A file without one is today's first format: `upgrade_*`
turns it into the current shape on load, so an old registry entry or checkpoint still loads.

Metric names are spelled `split/metric` (`val/loss`, `test/accuracy`) in code and in the
flat dictionaries (train summary, checkpoint info). The evaluation report and the model card
keep their metrics nested per split ({"val": {"accuracy": ...}, "test": {...}}): DVC flattens
nested JSON with '.', which `dvc metrics show`, the experiments table and the tests read;
`metric_value(metrics, "test/accuracy")` reads them by the one spelling.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

SCHEMA_VERSION = 2  # 1: the files written before these models existed (no schema_version)


def metric_key(split: str, metric: str) -> str:
    return f"{split}/{metric}"


def metric_value(metrics: dict[str, Any], key: str) -> Any:
    """A metric by its `split/metric` name from metrics nested per split; KeyError names the key."""
    split, _, name = key.partition("/")
    try:
        return metrics[split][name]
    except (KeyError, TypeError):
        raise KeyError(f"no metric {key!r} (expected metrics[{split!r}][{name!r}])") from None


def flat_metric_keys(metrics: dict[str, Any]) -> dict[str, Any]:
    """Old spellings of flat metric keys (`val_loss`, `val.loss`) -> `val/loss`; others unchanged."""
    out = {}
    for key, value in metrics.items():
        for split in ("train", "val", "test"):
            for sep in ("_", "."):
                if key.startswith(split + sep):
                    key = f"{split}/{key[len(split) + 1 :]}"
        out[key] = value
    return out


class _Part(BaseModel):
    # Readers ignore keys they do not know: a newer writer may add some.
    model_config = ConfigDict(extra="ignore")


class _Handoff(_Part):
    """A whole file (or checkpoint info): versioned."""

    schema_version: int = SCHEMA_VERSION


# -- the preprocessing state of each modality (plain data; see pipelines/modalities/) ---------


class TableState(BaseModel):
    kind: Literal["table"] = "table"
    features: list[str]
    mean: list[float]
    std: list[float]


class ImageState(BaseModel):
    kind: Literal["image"] = "image"
    input_shape: list[int]
    mean: list[float]
    std: list[float]
    image_size: list[int] | None = None  # [height, width] images are resized to (photos; arrays when asked)
    channels: int | None = None  # 1 or 3 when asked or inferred (photos); None: as the arrays come


class SeriesState(BaseModel):
    kind: Literal["series"] = "series"
    window: int
    season_length: int
    mean: float
    std: float


class TextState(BaseModel):
    kind: Literal["text"] = "text"
    context_length: int
    vocab: list[str]
    unk_id: int = 0


PreprocessingState = Annotated[TableState | ImageState | SeriesState | TextState, Field(discriminator="kind")]
_MODALITY_OF_TASK = {"forecast": "series", "next_word": "text"}


def legacy_preprocessing(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The preprocessing state of a version-1 meta (its `normalization`, `vocab`...), or None if it has none."""
    modality = meta.get("modality") or _MODALITY_OF_TASK.get(meta.get("task", ""))
    norm = meta.get("normalization") or {}
    if modality is None:
        modality = "table" if "features" in meta else "image" if norm.get("per") == "channel" else None
    if modality == "text" and "vocab" in meta:
        return {"kind": "text", "context_length": meta["context_length"], "vocab": meta["vocab"], "unk_id": 0}
    if not norm:
        return None
    if modality == "table":
        return {"kind": "table", "features": meta["features"], "mean": norm["mean"], "std": norm["std"]}
    if modality == "image":
        return {"kind": "image", "input_shape": meta["input_shape"], "mean": norm["mean"], "std": norm["std"]}
    if modality == "series":
        return {
            "kind": "series",
            "window": meta["window"],
            "season_length": meta["season_length"],
            "mean": norm["mean"],
            "std": norm["std"],
        }
    return None


def upgrade_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """A prepared meta of any version as the current layout (`preprocessing` instead of `normalization`)."""
    if "preprocessing" in meta:
        return meta
    state = legacy_preprocessing(meta)
    out = {k: v for k, v in meta.items() if k not in ("normalization", "vocab")}
    return out | ({"preprocessing": state} if state is not None else {})


class PreparedMeta(_Handoff):
    """data/prepared/<dataset>/meta.json: what prepare made, and the fitted preprocessing."""

    dataset: str
    modality: Literal["table", "image", "series", "text"]
    task: str
    input_shape: list[int]
    classes: list[str] | None = None
    sizes: dict[str, int]
    seed: int
    preprocessing: PreprocessingState
    class_counts_train: list[int] | None = None
    # Modality-specific descriptions (None where they do not apply).
    features: list[str] | None = None
    in_features: int | None = None
    label: str | None = None
    window: int | None = None
    season_length: int | None = None
    vocab_size: int | None = None
    unk_id: int | None = None
    context_length: int | None = None
    tokens: dict[str, int] | None = None

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        return upgrade_meta(data) if isinstance(data, dict) else data

    @computed_field  # the words themselves live in the text preprocessing state; shown here for readers
    @property
    def vocab(self) -> list[str] | None:
        return self.preprocessing.vocab if isinstance(self.preprocessing, TextState) else None

    def dump(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


# -- train: the summary and each candidate's checkpoint info ------------------------------------


class CandidateSummary(_Part):
    family: str
    best_epoch: int
    epochs_run: int
    val_metrics: dict[str, float]  # split/metric keys, as logged
    seconds: float
    workers: Any = None  # node id, host and pid of each rank
    searched: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("val_metrics"), dict):
            data = {**data, "val_metrics": flat_metric_keys(data["val_metrics"])}
        return data


class TrainSummary(_Handoff):
    """data/train/<dataset>/summary.json."""

    dataset: str
    candidates: dict[str, CandidateSummary]
    data_fingerprint: str
    ray_start_s: float | None = None


class CandidateInfo(_Handoff):
    """What travels inside an exported checkpoint beside the weights (models/checkpoint.py)."""

    candidate: str
    dataset: str
    model_spec: dict[str, Any]
    optim: dict[str, Any] = {}
    task: str
    loss: str
    n_classes: int | None = None
    classes: list[str] | None = None
    best_epoch: int = -1
    val_metrics: dict[str, float] = {}
    data_meta: PreparedMeta
    searched: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("val_metrics"), dict):
            data = {**data, "val_metrics": flat_metric_keys(data["val_metrics"])}
        return data

    def dump(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True) | {"data_meta": self.data_meta.dump()}


# -- evaluate and register ---------------------------------------------------------------------


class EvaluationReport(_Handoff):
    """data/evaluate/<dataset>/metrics.json (a DVC metrics file)."""

    dataset: str
    task: str
    primary_metric: str
    mode: Literal["min", "max"]
    candidates: dict[str, dict[str, dict[str, Any]]]  # candidate -> split -> metric -> value
    baselines: dict[str, float] = {}
    best_candidate: str
    # The best candidate's scalar test metrics, flat for `dvc exp show` columns: `best.test_<metric>`
    # (the experiments table and existing DVC experiment metrics key on this spelling).
    best: dict[str, Any]

    def metric(self, candidate: str, key: str) -> Any:
        return metric_value(self.candidates[candidate], key)


class ModelCard(_Handoff):
    """card.json of a registered version. Cards of every version load: all fields but the metrics are optional."""

    model_config = ConfigDict(extra="allow")  # a registry stores whatever a card holds, and gives it back

    name: str | None = None
    version: int | None = None
    sha256: str | None = None
    created_at: str | None = None
    dataset: str | None = None
    candidate: str | None = None
    family: str | None = None
    task: str | None = None
    primary_metric: str | None = None
    mode: Literal["min", "max"] | None = None
    metrics: dict[str, Any] = {}  # split -> metric -> value
    baselines: dict[str, float] = {}
    candidates_compared: list[str] = []
    params: dict[str, Any] = {}
    plots: list[str] | str | None = None
    lineage: dict[str, Any] = {}

    def metric(self, key: str) -> Any:
        return metric_value(self.metrics, key)
