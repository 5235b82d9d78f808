"""What train, evaluate and register hand on: train summary, checkpoint info, evaluation report, model card."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, model_validator

from pipelines.handoffs.keys import SCHEMA_VERSION, _Handoff, _Part, flat_metrics, metric_value
from pipelines.handoffs.prepared import PreparedMeta


class _FlatValMetrics(_Part):
    """Older files nest val_metrics per split or spell `val_loss`: read them as split/metric keys."""

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("val_metrics"), dict):
            data = {**data, "val_metrics": flat_metrics(data["val_metrics"])}
        return data


class ClassWeights(_Part):
    """How a candidate's loss weighed the classes, and the training split's rows of each class they came from."""

    setting: str  # none | balanced (train.class_weights, or the candidate's own)
    weights: dict[str, float] | None = None  # class name -> weight in the loss; None: unweighted
    train_counts: dict[str, int] | None = None  # class name -> rows in the training split


class Selection(_Part):
    """Which metric picked the best candidate (on val), how it was set, and each candidate's value of it."""

    metric: str  # `val/<primary_metric>`
    mode: Literal["min", "max"]
    set_by: str  # the params key that chose it, or the task's default
    values: dict[str, float]  # candidate -> its val value (NaN-free JSON: a non-finite value is left out)


class CandidateSummary(_FlatValMetrics):
    family: str
    # finished; failed (a non-finite loss: `error` says why, no checkpoint); stopped (a search trial cut short)
    status: Literal["finished", "failed", "stopped"] = "finished"
    error: str | None = None
    best_epoch: int | None = None  # None when failed
    epochs_run: int
    val_metrics: dict[str, float] | None = None  # split/metric keys, as logged; None when failed
    seconds: float
    workers: Any = None  # node id, host and pid of each rank; after the fit its weights' and shards' digests
    # ranks, identical_weights, disjoint_shards (pipelines/training/rank_check.py); None when failed
    rank_check: dict[str, Any] | None = None
    searched: dict[str, Any] | None = None
    class_weights: ClassWeights | None = None  # classification tasks only


class TrainSummary(_Handoff):
    """data/train/<dataset>/summary.json."""

    dataset: str
    candidates: dict[str, CandidateSummary]
    data_fingerprint: str
    ray_start_s: float | None = None
    ray: dict[str, Any] | None = None  # the Ray instance that served the stage (gcs_address, session_name)
    scaling: dict[str, Any] | None = None  # workers, CPUs/GPUs per worker, as resolved
    data_loading: str | None = None  # memory | stream: how the workers got the data (training.data)
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
    class_weights: ClassWeights | None = None

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
    # The version the promote alias pointed to, scored on this run's test split (pipelines/evaluation/champion.py):
    # {"version", "alias", "comparable": True, "test/<metric>"...} or {..., "comparable": False, "reason"};
    # None when the alias was not set.
    champion: dict[str, Any] | None = None
    selection: Selection | None = None  # None in reports written before the primary metric could be chosen

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
    signature: dict[str, Any] | None = None  # what every version of the name shares (pipelines/registry/model_line)
    champion: dict[str, Any] | None = None  # the alias's version when this one registered, on the same test split
    selection: Selection | None = None  # the metric that picked this candidate among those compared
    class_weights: ClassWeights | None = None  # how its loss weighed the classes (classification tasks)

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
