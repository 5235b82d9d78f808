"""Small real registered models, fast: the real ingest and prepare stages on a small input, the candidate's
own network trained a few steps (bench/small_models.train_small, shared with the serving benchmark), saved and
registered as train and register save them (a weights-only checkpoint with its CandidateInfo, a card). Run in
the current directory (the `in_tmp` fixture); the registry is data/registry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.config import DatasetParams

REGISTRY = "data/registry"


def register_small(
    name: str,
    modality: str,
    ingest: dict[str, Any],
    candidate: dict[str, Any],
    prepare: dict | None = None,
    steps: int = 10,
) -> Path:
    """ingest -> prepare -> a few training steps -> register `name` v1; returns the checkpoint."""
    from bench.small_models import train_small
    from models.checkpoint import save_checkpoint
    from pipelines.registry.local import open_registry
    from pipelines.stages.ingest import ingest as ingest_stage
    from pipelines.stages.prepare import load_split
    from pipelines.stages.prepare import prepare as prepare_stage

    params = DatasetParams(
        modality=modality,
        ingest=ingest,
        prepare=prepare or {},
        train={"candidates": {"c": candidate}},
        register={"model_name": name},
    )
    ingest_stage(name, params)
    meta = prepare_stage(name, params)
    net, info = train_small(name, "c", params.train.candidates["c"], meta, *load_split(name, "train"), steps, seed=0)
    path = Path(f"{name}.pt")
    save_checkpoint(path, net.state_dict(), info)
    card = {"dataset": name, "candidate": "c", "task": meta["task"], "metrics": {}, "lineage": {"data": ingest}}
    open_registry(REGISTRY).register(name, path, card)
    return path
