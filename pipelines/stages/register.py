"""Stage 5, register: publish a dataset's best candidate as a new immutable model version.

python -m pipelines.stages.register <dataset>
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pipelines.atomic import read_json, write_json
from pipelines.config import PipelineParams
from pipelines.errors import PipelineInputError, cli_entry
from pipelines.handoffs import EvaluationReport, ModelCard, TrainSummary
from pipelines.paths import DatasetPaths
from pipelines.registry.lineage import dvc_output_hash, git_commit, package_versions
from pipelines.registry.local import ModelRegistry, ModelVersion, open_configured
from pipelines.registry.model_line import signature_of
from pipelines.stages.cli import pipeline_and_dataset
from pipelines.stages.prepare import read_meta


def register(params: PipelineParams, dataset: str) -> ModelVersion:
    """Publish the best candidate (or find the version a killed earlier attempt published) and decide promotion.

    A model of another kind than the name's versions is refused before anything is written (exit 2).
    Promotion compares the new version with the alias's version on this run's test split (evaluate's
    `champion`, scored again here if the alias moved since evaluate ran)."""
    where = DatasetPaths(dataset)
    ds = params.datasets[dataset]
    report = EvaluationReport.model_validate(read_json(where.metrics_file))
    best = report.best_candidate
    summary = TrainSummary.model_validate(read_json(where.train_summary))
    if best not in summary.candidates or summary.candidates[best].status == "failed":
        # Evaluate never picks a failed candidate; a hand-edited or stale metrics.json must not either.
        raise PipelineInputError(
            f"register[{dataset}]: {where.metrics_file}: best_candidate {best!r} is not a trained candidate of "
            f"{where.train_summary} (failed or missing): nothing trained on NaN is registered"
        )
    name, alias = ds.register.model_name, params.register.promote_alias
    registry = open_configured(params.register.registry)
    meta = read_meta(dataset)
    registry.check_model_line(name, signature_of(meta), dataset)
    champion = _champion(params, dataset, registry, report.champion)
    card = ModelCard(
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        dataset=dataset,
        candidate=best,
        family=summary.candidates[best].family,
        task=report.task,
        primary_metric=report.primary_metric,
        mode=report.mode,
        metrics=report.candidates[best],
        baselines=report.baselines,
        candidates_compared=sorted(report.candidates),
        params={"dataset": ds.model_dump(mode="json"), "train": params.train.model_dump(mode="json")},
        plots=sorted(str(p) for p in where.plots_dir.glob("*.png")),
        lineage={
            "git": git_commit(),
            "data": {
                "source": ds.ingest.source,
                "prepared_dvc_md5": dvc_output_hash(f"prepare@{dataset}", where.prepared_dir),
                "prepared_sha256": summary.data_fingerprint,
            },
            "packages": package_versions(),
        },
        signature=signature_of(meta),
        champion=champion,  # the version it was compared with, scored on the same test split
        selection=report.selection,  # the metric that picked it (and what set that metric)
        class_weights=summary.candidates[best].class_weights,
    ).model_dump(exclude_none=True)  # name, version and sha256 are the registry's to fill in
    version, created = registry.publish(name, where.candidate_checkpoint(best), card, dataset)
    if not created:
        print(f"register[{dataset}]: {name} v{version.version} already holds this checkpoint: not published again")
    promotion = None
    if params.register.promote_policy != "never":
        promotion = registry.promote(
            name, version.version, alias, policy=params.register.promote_policy, champion=champion
        )
        print(f"register[{dataset}]: {promotion}")
    write_json(
        where.registered_file,
        {
            "dataset": dataset,
            "name": version.name,
            "version": version.version,
            "uri": version.uri or str(version.path),
            "path": str(version.path),
            "sha256": version.card["sha256"],
            "candidate": best,
            "new_version": created,
            "promoted_to": alias if promotion and promotion.promoted else None,
            "promotion": str(promotion) if promotion else None,
        },
    )
    return version


def _champion(
    params: PipelineParams, dataset: str, registry: ModelRegistry, scored: dict[str, Any] | None
) -> dict[str, Any] | None:
    """Evaluate's score of the alias's version on this test split, scored again if the alias has moved since."""
    name, alias = params.datasets[dataset].register.model_name, params.register.promote_alias
    current = registry.aliases(name).get(alias)
    if current is None or (scored is not None and scored.get("version") == current):
        return scored if current is not None else None
    from pipelines.evaluation.champion import score_champion
    from pipelines.handoffs.splits import SplitChunks

    test = SplitChunks.in_batches(DatasetPaths(dataset).split_dir("test"), params.evaluate.batch_size)
    print(f"register[{dataset}]: {alias} is v{current}, not the version evaluate scored: scoring v{current}")
    return score_champion(dataset, read_meta(dataset), registry, name, alias, test, params.evaluate.batch_size)


@cli_entry
def main() -> None:
    params, dataset = pipeline_and_dataset("register")
    version = register(params, dataset)
    print(f"register[{dataset}]: {version.name} v{version.version} ({version.card['candidate']}) -> {version.path}")


if __name__ == "__main__":
    main()
