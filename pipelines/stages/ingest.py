"""Stage 1, ingest: read a dataset's source, validate it, write data/raw/<dataset>/.

python -m pipelines.stages.ingest <dataset>
"""

from __future__ import annotations

from pipelines.atomic import atomic_dir, write_json
from pipelines.config import DatasetParams
from pipelines.errors import cli_entry
from pipelines.modalities import module_for
from pipelines.paths import DatasetPaths
from pipelines.stages.cli import dataset_from_argv


def ingest(name: str, params: DatasetParams) -> dict:
    where = DatasetPaths(name)
    with atomic_dir(where.raw_dir) as tmp:  # nothing half-written is ever visible
        info = module_for(params.modality).ingest(params.ingest, tmp)
        info["modality"] = params.modality
        write_json(tmp / where.raw_source_info.name, info)
    return info


@cli_entry
def main() -> None:
    name, params = dataset_from_argv("ingest")
    info = ingest(name, params)
    profile = f"; profile: {where}" if (where := DatasetPaths(name).raw_profile).exists() else ""
    print(f"ingest[{name}]: {info['summary']} from {info['source']}{profile}")


if __name__ == "__main__":
    main()
