"""Stage 2, prepare: seeded, deterministic split; preprocessing fitted on train only; Parquet shards + meta.

python -m pipelines.stages.prepare <dataset>
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.atomic import atomic_dir, read_json, write_json
from pipelines.config import DatasetParams, PipelineParams
from pipelines.errors import Unavailable, cli_entry
from pipelines.handoffs import PreparedMeta
from pipelines.handoffs.splits import iter_targets, read_split, split_rows
from pipelines.modalities import module_for
from pipelines.paths import DatasetPaths
from pipelines.stages.cli import pipeline_and_dataset

SPLITS = ("train", "val", "test")


def check_model_line(params: PipelineParams, name: str, meta: PreparedMeta) -> None:
    """Refuse, before anything trains, a model of another kind than the versions its model name holds (exit 2)."""
    from pipelines.registry.local import open_configured
    from pipelines.registry.model_line import signature_of

    try:
        registry = open_configured(params.register.registry)
        registry.check_model_line(params.datasets[name].register.model_name, signature_of(meta), name)
    except Unavailable as err:  # register checks again, and refuses there at the latest
        print(f"prepare[{name}]: warning: the model name was not checked against the registry: {err}")


def prepare(name: str, params: DatasetParams, check_line=None) -> dict:
    """Split, fit the preprocessing on train, write the splits' shards; `check_line(meta)` may refuse (nothing is
    kept: the shards are written in a temp folder that replaces the prepared folder only when all is done)."""
    where = DatasetPaths(name)
    info = read_json(where.raw_source_info)
    with atomic_dir(where.prepared_dir) as tmp:
        meta = module_for(params.modality).prepare(where.raw_dir, params.ingest, params.prepare, info, tmp)
        classes = meta.get("classes")
        typed = PreparedMeta(
            dataset=name,
            modality=params.modality,
            task=info["task"],
            **meta,
            sizes={split: split_rows(tmp / split) for split in SPLITS},
            seed=params.prepare.seed,
            class_counts_train=_class_counts(tmp / "train", len(classes)) if classes else None,
        )
        if check_line is not None:
            check_line(typed)
        write_json(tmp / where.prepared_meta.name, typed.dump())
    return typed.dump()


def _class_counts(split: Path, n_classes: int) -> list[int]:
    counts = np.zeros(n_classes, np.int64)
    for y in iter_targets(split):
        counts += np.bincount(y.reshape(-1), minlength=n_classes)
    return counts.tolist()


def read_meta(name: str) -> PreparedMeta:
    """A dataset's prepared meta.json, of any schema version."""
    return PreparedMeta.model_validate(read_json(DatasetPaths(name).prepared_meta))


def load_split(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A prepared split of a dataset, whole, in memory (pipelines.handoffs.splits.read_split)."""
    return read_split(DatasetPaths(name).split_dir(split))


@cli_entry
def main() -> None:
    params, name = pipeline_and_dataset("prepare")
    meta = prepare(name, params.datasets[name], lambda typed: check_model_line(params, name, typed))
    print(
        f"prepare[{name}]: {meta['modality']} / {meta['task']}, input {meta['input_shape']}, "
        f"split sizes {meta['sizes']}"
    )


if __name__ == "__main__":
    main()
