"""Stage 5, register: publish the best candidate as a new immutable model version."""
from __future__ import annotations

import datetime as dt

from pipelines import paths
from pipelines.atomic import read_json, write_json
from pipelines.config import PipelineParams, load_params
from pipelines.errors import cli_entry
from pipelines.lineage import dvc_output_hash, git_commit, package_versions
from pipelines.model_registry import LocalModelRegistry, ModelVersion


def register(params: PipelineParams) -> ModelVersion:
    report = read_json(paths.METRICS_FILE)
    best = report["best_candidate"]
    summary = read_json(paths.TRAIN_SUMMARY)
    card = {
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "candidate": best,
        "task": report["task"],
        "primary_metric": report["primary_metric"],
        "metrics": report["candidates"][best],
        "candidates_compared": sorted(report["candidates"]),
        "params": params.model_dump(mode="json"),
        "lineage": {
            "git": git_commit(),
            "data": {
                "source": params.ingest.source,
                "prepared_dvc_md5": dvc_output_hash("prepare", paths.PREPARED_DIR),
                "prepared_sha256": summary["data_fingerprint"],
            },
            "packages": package_versions(),
        },
    }
    registry = LocalModelRegistry(paths.absolute(params.register.registry))
    version = registry.register(params.register.model_name, paths.candidate_checkpoint(best), card)
    write_json(
        paths.REGISTERED_FILE,
        {"name": version.name, "version": version.version, "path": str(version.path), "sha256": version.card["sha256"], "candidate": best},
    )
    return version


@cli_entry
def main() -> None:
    version = register(load_params())
    print(f"register: {version.name} v{version.version} ({version.card['candidate']}) -> {version.path}")


if __name__ == "__main__":
    main()
