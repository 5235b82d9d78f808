"""Stage 2, prepare: seeded, deterministic split; preprocessing fitted on train only; compact arrays + meta.

python -m pipelines.stages.prepare <dataset>
"""

from __future__ import annotations

import numpy as np

from pipelines.atomic import atomic_dir, read_json, write_json
from pipelines.config import DatasetParams, PipelineParams
from pipelines.errors import Unavailable, cli_entry
from pipelines.handoffs import PreparedMeta
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
    """Split, fit the preprocessing on train, write the arrays; `check_line(meta)` may refuse before writing."""
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
    if check_line is not None:
        check_line(typed)
    with atomic_dir(where.prepared_dir) as tmp:
        for split in SPLITS:
            x, y = arrays[split]
            np.savez(tmp / where.split_file(split).name, x=x, y=y)
        if "test_inputs" in arrays:  # tables: the raw test rows (pipelines/evaluation/champion.py)
            arrays["test_inputs"].to_parquet(tmp / where.test_inputs.name, index=False)
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
    params, name = pipeline_and_dataset("prepare")
    meta = prepare(name, params.datasets[name], lambda typed: check_model_line(params, name, typed))
    print(
        f"prepare[{name}]: {meta['modality']} / {meta['task']}, input {meta['input_shape']}, "
        f"split sizes {meta['sizes']}"
    )


if __name__ == "__main__":
    main()
