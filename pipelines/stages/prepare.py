"""Stage 2, prepare: seeded, deterministic split; preprocessing fitted on train only; compact arrays + meta.

python -m pipelines.stages.prepare <dataset>
"""

from __future__ import annotations

import numpy as np

from pipelines.atomic import atomic_dir, read_json, write_json
from pipelines.config import DatasetParams
from pipelines.errors import cli_entry
from pipelines.handoffs import PreparedMeta
from pipelines.modalities import module_for
from pipelines.paths import DatasetPaths
from pipelines.stages.cli import dataset_from_argv

SPLITS = ("train", "val", "test")


def prepare(name: str, params: DatasetParams) -> dict:
    where = DatasetPaths(name)
    info = read_json(where.raw_source_info)
    arrays, meta = module_for(params.modality).prepare(where.raw_dir, params.ingest, params.prepare, info)
    classes = meta.get("classes")
    typed = PreparedMeta(
        dataset=name,
        modality=params.modality,
        task=info["task"],
        **meta,
        sizes={split: int(len(arrays[split][0])) for split in SPLITS},
        seed=params.prepare.seed,
        class_counts_train=np.bincount(arrays["train"][1], minlength=len(classes)).tolist() if classes else None,
    )
    with atomic_dir(where.prepared_dir) as tmp:
        for split in SPLITS:
            x, y = arrays[split]
            np.savez(tmp / where.split_file(split).name, x=x, y=y)
        write_json(tmp / where.prepared_meta.name, typed.dump())
    return typed.dump()


def read_meta(name: str) -> PreparedMeta:
    """A dataset's prepared meta.json, of any schema version."""
    return PreparedMeta.model_validate(read_json(DatasetPaths(name).prepared_meta))


def load_split(name: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(DatasetPaths(name).split_file(split)) as arrays:
        return arrays["x"], arrays["y"]


@cli_entry
def main() -> None:
    name, params = dataset_from_argv("prepare")
    meta = prepare(name, params)
    print(
        f"prepare[{name}]: {meta['modality']} / {meta['task']}, input {meta['input_shape']}, "
        f"split sizes {meta['sizes']}"
    )


if __name__ == "__main__":
    main()
