"""Stage 5, register: publish a dataset's best candidate as a new immutable model version.

python -m pipelines.stages.register <dataset>
"""

from __future__ import annotations

import datetime as dt

from pipelines import paths
from pipelines.atomic import read_json, write_json
from pipelines.config import PipelineParams
from pipelines.errors import PipelineInputError, cli_entry
from pipelines.handoffs import EvaluationReport, ModelCard, TrainSummary
from pipelines.paths import DatasetPaths
from pipelines.registry.lineage import dvc_output_hash, git_commit, package_versions
from pipelines.registry.local import ModelVersion, open_registry
from pipelines.stages.cli import pipeline_and_dataset


def register(params: PipelineParams, dataset: str) -> ModelVersion:
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
    ).model_dump(exclude_none=True)  # name, version and sha256 are the registry's to fill in
    location = params.register.registry
    registry = open_registry(location if "://" in location else paths.absolute(location))
    version = registry.register(ds.register.model_name, where.candidate_checkpoint(best), card)
    promotion = None
    if params.register.promote_policy != "never":
        promotion = registry.promote(
            version.name, version.version, params.register.promote_alias, policy=params.register.promote_policy
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
            "promoted_to": params.register.promote_alias if promotion and promotion.promoted else None,
        },
    )
    return version


@cli_entry
def main() -> None:
    params, dataset = pipeline_and_dataset("register")
    version = register(params, dataset)
    print(f"register[{dataset}]: {version.name} v{version.version} ({version.card['candidate']}) -> {version.path}")


if __name__ == "__main__":
    main()
