"""Small real models in a registry, in seconds: for the serving test and benchmark.

Each is a default dataset of params.yaml read and prepared by its modality's own ingest and prepare (the
preprocessing object fitted on the training split), its first candidate built from the catalogue and
trained for a few steps of plain PyTorch, saved as the train stage saves a checkpoint
(weights-only, CandidateInfo) and registered under the dataset's model name with the alias `production`.
Not the pipeline's training (no Ray, no Lightning, no early stopping): a real model, quickly.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# Keeps each model's preparation and training to about a second on one core.
SMALL = {"text": {"max_tokens": 4000, "max_vocab": 300, "min_count": 1}}
BATCH = 128


def register_small(
    registry: str | Path,
    dataset: str,
    epochs: int = 15,
    seed: int = 0,
    model_name: str | None = None,
    ingest: dict[str, Any] | None = None,
    prepare: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Prepare `dataset` (a params.yaml dataset; `ingest` and `prepare` override keys of its sections), train
    briefly, register it; returns name, version and raw rows."""
    from models.checkpoint import save_checkpoint
    from pipelines.config import load_params
    from pipelines.handoffs import PreparedMeta
    from pipelines.handoffs.splits import read_split, split_rows
    from pipelines.modalities import module_for
    from pipelines.registry.local import open_registry
    from pipelines.stages.prepare import SPLITS

    params = load_params(ROOT / "params.yaml").datasets[dataset]
    params = params.model_copy(update={"ingest": params.ingest.model_copy(update=ingest or {})})
    prepare_params = params.prepare.model_copy(update=SMALL.get(params.modality, {}) | (prepare or {}))
    name = model_name or params.register.model_name
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp)
        module = module_for(params.modality)
        info = module.ingest(params.ingest, raw)
        prepared = raw / "prepared"
        meta = module.prepare(raw, params.ingest, prepare_params, info, prepared)  # writes the splits' shards
        typed = PreparedMeta(
            dataset=dataset,
            modality=params.modality,
            task=info["task"],
            **meta,
            sizes={split: split_rows(prepared / split) for split in SPLITS},
            seed=prepare_params.seed,
        )
        cand_name, cand = next(iter(params.train.candidates.items()))
        x, y = read_split(prepared / "train")
        net, checkpoint_info = train_small(dataset, cand_name, cand, typed.dump(), x, y, epochs, seed)
        spec = checkpoint_info["model_spec"]
        checkpoint = raw / "model.pt"
        save_checkpoint(checkpoint, net.state_dict(), checkpoint_info)
        card = {
            "dataset": dataset,
            "candidate": cand_name,
            "family": spec["family"],
            "task": typed.task,
            "metrics": {},
            "lineage": {"note": "bench/small_models.py: a few epochs of plain PyTorch"},
        }
        registry_obj = open_registry(str(registry))
        version = registry_obj.register(name, checkpoint, card)
        registry_obj.set_alias(name, "production", version.version)
        return {"name": name, "version": version.version, "raw": raw_rows(raw, params.modality)}


def train_small(
    dataset: str, cand_name: str, cand: Any, meta: dict[str, Any], x: np.ndarray, y: np.ndarray, steps: int, seed: int
) -> tuple[Any, dict[str, Any]]:
    """The candidate's network (from the catalogue, for the prepared `meta`), trained `steps` Adam steps on BATCH
    random training rows each, in eval mode; and its checkpoint info as the train stage writes it."""
    import torch

    import models
    from models.tasks import loss_target, make_loss, output_size, resolve_loss
    from pipelines.handoffs import CandidateInfo

    classes = meta.get("classes")
    n_classes = len(classes) if classes else meta.get("vocab_size")
    loss = resolve_loss(meta["task"], cand.loss, n_classes)
    spec = cand.model_spec(meta, output_size(meta["task"], loss, n_classes, meta.get("horizon") or 1))
    torch.manual_seed(seed)
    net = models.create_model(spec["family"], **{k: v for k, v in spec.items() if k != "family"})
    x, y = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y))
    optimizer, criterion = torch.optim.Adam(net.parameters(), lr=0.01), make_loss(loss)
    net.train()
    for _ in range(steps):  # trained a little, so the weights are not the initialization's
        rows = torch.randint(len(x), (min(BATCH, len(x)),))
        optimizer.zero_grad()
        criterion(net(x[rows]), loss_target(loss, y[rows])).backward()
        optimizer.step()
    net.eval()
    info = CandidateInfo(
        candidate=cand_name, dataset=dataset, model_spec=spec, task=meta["task"], loss=loss, n_classes=n_classes,
        classes=classes, best_epoch=steps - 1, data_meta=meta,
    ).dump()  # fmt: skip
    return net, info


def raw_rows(raw_dir: Path, modality: str) -> Any:
    """Some of the dataset's raw inputs, as a user would send them (the raw table, pixels, text, series)."""
    import pandas as pd

    if modality == "table":
        from pipelines.modalities.tables import RAW_TABLE

        return pd.read_parquet(raw_dir / RAW_TABLE)
    if modality == "image":
        from pipelines.modalities.image import RAW_IMAGES

        with np.load(raw_dir / RAW_IMAGES) as arrays:
            return arrays["x"]
    if modality == "text":
        from pipelines.modalities.text import RAW_CORPUS

        return (raw_dir / RAW_CORPUS).read_text(encoding="utf-8")
    from pipelines.modalities.series import RAW_SERIES

    return pd.read_parquet(raw_dir / RAW_SERIES)
