"""What the stages hand each other, typed: prepared meta, train summary, checkpoint info, evaluation report, card.

Every model carries `schema_version`. A file without one is today's first format: `upgrade_*`
turns it into the current shape on load, so an old registry entry or checkpoint still loads.

Metric keys have one spelling, `split/metric` (`val/loss`, `test/accuracy`), everywhere:
train summary, checkpoint info, history.csv columns, metrics.json (flat per candidate and in
`best`), the model card. `dvc metrics show` and the experiments table flatten the JSON with '.',
so they show e.g. `best.test/accuracy`. Older files spelled the same metric `val_loss`, `val.loss`,
nested per split ({"val": {"accuracy": ...}}) or `best.test_accuracy`; `flat_metrics` reads all of
those, and the models below upgrade on load (schema_version 3, 2 and 1 files still load). Baselines
are scored like candidates, `{name: {split/metric: value}}`; before version 4 each was one float
(`{"unigram_perplexity": 123.4}`), read as `{"unigram": {"test/perplexity": 123.4}}`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

# 1: the files written before these models existed (no schema_version);
# 2: metrics.json and the card kept metrics nested per split and `best.test_<metric>`;
# 3: `split/metric` keys everywhere;
# 4: baselines per name with `split/metric` keys ({"unigram": {"test/perplexity": ...}}), not one float each.
SCHEMA_VERSION = 4
SPLITS = ("train", "val", "test")


def metric_key(split: str, metric: str) -> str:
    return f"{split}/{metric}"


def metric_value(metrics: dict[str, Any], key: str) -> Any:
    """A metric by its `split/metric` key from metrics of any version; KeyError names the key."""
    try:
        return flat_metrics(metrics)[key]
    except (KeyError, TypeError, AttributeError):
        raise KeyError(f"no metric {key!r} (expected a {key!r} key in {sorted(metrics or {})})") from None


def flat_key(key: str) -> str:
    """An old spelling of a metric key (`val_loss`, `val.loss`, `test_accuracy`) -> `val/loss`; others unchanged."""
    for split in SPLITS:
        for sep in ("_", "."):
            if key.startswith(split + sep):
                return f"{split}/{key[len(split) + 1 :]}"
    return key


def flat_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics of any version as flat `split/metric` keys: nested per split ({"test": {"accuracy": ...}})
    and old flat spellings (`val_loss`, `test_accuracy`) are rewritten; other keys (`candidate`) kept."""
    out: dict[str, Any] = {}
    for key, value in metrics.items():
        if key in SPLITS and isinstance(value, dict):
            out.update({metric_key(key, name): v for name, v in value.items()})
        else:
            out[flat_key(key)] = value
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
    features: list[str]  # the source's feature columns the model reads
    mean: list[float]  # per dense input entry
    std: list[float]
    columns: list[dict[str, Any]] | None = None  # each column's type and fitted encoding (None: all numbers)
    target: dict[str, Any] | None = None  # regression: the label's scaling (None: as it is)


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
    horizon: int = 1  # steps forecast at once
    transform: str = "standard"  # standard | log | relative | log_relative
    time_column: str | None = None  # predict reads timestamps from it when the input has it
    freq: str | None = None  # pandas frequency of the training series' timestamps
    column: str | None = None  # the value column of the training file (predict's default)


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
    horizon: int | None = None  # series: the model's outputs (None: 1, files written before horizons)
    transform: str | None = None
    relative: bool | None = None  # series: the network takes each window relative to its last value
    mase_scale: float | None = None  # series: in-sample seasonal-naive MAE of the training part
    freq: str | None = None  # series: pandas frequency of its timestamps
    start: str | None = None  # series: timestamp of its first step
    vocab_size: int | None = None
    unk_id: int | None = None
    context_length: int | None = None
    tokens: dict[str, int] | None = None
    embeddings: list[list[int]] | None = None  # tables: [cardinality, dim] of each embedded category

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


class _FlatValMetrics(_Part):
    """Older files nest val_metrics per split or spell `val_loss`: read them as split/metric keys."""

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("val_metrics"), dict):
            data = {**data, "val_metrics": flat_metrics(data["val_metrics"])}
        return data


class CandidateSummary(_FlatValMetrics):
    family: str
    # finished; failed (a non-finite loss: `error` says why, no checkpoint); stopped (a search trial cut short)
    status: Literal["finished", "failed", "stopped"] = "finished"
    error: str | None = None
    best_epoch: int | None = None  # None when failed
    epochs_run: int
    val_metrics: dict[str, float] | None = None  # split/metric keys, as logged; None when failed
    seconds: float
    workers: Any = None  # node id, host and pid of each rank
    searched: dict[str, Any] | None = None


class TrainSummary(_Handoff):
    """data/train/<dataset>/summary.json."""

    dataset: str
    candidates: dict[str, CandidateSummary]
    data_fingerprint: str
    ray_start_s: float | None = None
    ray: dict[str, Any] | None = None  # the Ray instance that served the stage (gcs_address, session_name)
    scaling: dict[str, Any] | None = None  # workers, CPUs/GPUs per worker, as resolved
    worker_group_seconds: float | None = None  # one fit for all grouped candidates: start to teardown


class CandidateInfo(_FlatValMetrics, _Handoff):
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

    def dump(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True) | {"data_meta": self.data_meta.dump()}


# -- evaluate and register ---------------------------------------------------------------------


class EvaluationReport(_Handoff):
    """data/evaluate/<dataset>/metrics.json (a DVC metrics file)."""

    dataset: str
    task: str
    primary_metric: str
    mode: Literal["min", "max"]
    candidates: dict[str, dict[str, Any]]  # candidate -> `split/metric` -> value (the evaluated ones)
    baselines: dict[str, dict[str, float]] = {}  # baseline -> `split/metric` -> value (pipelines/evaluation/baselines)
    unbeaten_baselines: list[str] = []  # the baselines no candidate beats on test/<primary_metric>
    failed_candidates: dict[str, str] = {}  # candidate -> why it failed in training (not evaluated, never registered)
    best_candidate: str
    # {"candidate": name, "test/<metric>": value...}: the best candidate's scalar test metrics,
    # one `dvc exp show` column each (`best.test/accuracy`).
    best: dict[str, Any]

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        return upgrade_report(data) if isinstance(data, dict) else data

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
    metrics: dict[str, Any] = {}  # `split/metric` -> value (nested per split before version 3)
    baselines: dict[str, dict[str, float]] = {}  # as in the evaluation report (one float each before version 4)
    candidates_compared: list[str] = []
    params: dict[str, Any] = {}
    plots: list[str] | str | None = None
    lineage: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("metrics"), dict):
            data = {**data, "metrics": flat_metrics(data["metrics"]), "schema_version": SCHEMA_VERSION}
        if isinstance(data, dict) and isinstance(data.get("baselines"), dict):
            data = {**data, "baselines": upgrade_baselines(data["baselines"])}
        return data

    def metric(self, key: str) -> Any:
        return metric_value(self.metrics, key)


# Baselines that were one float before schema_version 4: old key -> (name, `split/metric`).
_LEGACY_BASELINES = {"unigram_perplexity": ("unigram", "test/perplexity")}


def upgrade_baselines(baselines: dict[str, Any]) -> dict[str, Any]:
    """Baselines of any version as {name: {`split/metric`: value}}; a version-3 float is its test value."""
    out: dict[str, Any] = {}
    for key, value in baselines.items():
        if isinstance(value, dict):
            out[key] = flat_metrics(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            name, metric = _LEGACY_BASELINES.get(key, (key, "test/value"))
            out.setdefault(name, {})[metric] = float(value)
        else:
            out[key] = value  # validation names it
    return out


def upgrade_report(report: dict[str, Any]) -> dict[str, Any]:
    """A metrics.json of any version with `split/metric` keys (per candidate and in `best`): the current version."""
    out = dict(report) | {"schema_version": SCHEMA_VERSION}
    if isinstance(report.get("candidates"), dict):
        out["candidates"] = {
            name: flat_metrics(scores) if isinstance(scores, dict) else scores
            for name, scores in report["candidates"].items()
        }
    if isinstance(report.get("best"), dict):
        out["best"] = flat_metrics(report["best"])
    if isinstance(report.get("baselines"), dict):
        out["baselines"] = upgrade_baselines(report["baselines"])
    return out


def card_metrics(card: dict[str, Any]) -> dict[str, Any]:
    """A stored card's metrics (any version) with `split/metric` keys; the card itself is left as written."""
    metrics = card.get("metrics")
    return flat_metrics(metrics) if isinstance(metrics, dict) else {}
