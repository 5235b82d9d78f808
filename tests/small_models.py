"""Small real registered models, fast: the real ingest and prepare stages on a small input, the candidate's
own network trained a few full-batch steps with a plain torch loop, saved and registered as train and
register save them (a weights-only checkpoint with its CandidateInfo, a card). Run in the current
directory (the `in_tmp` fixture); the registry is data/registry.
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
    import torch

    import models
    from models.checkpoint import save_checkpoint
    from models.tasks import loss_target, make_loss, output_size, resolve_loss
    from pipelines.handoffs import CandidateInfo
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
    cand = params.train.candidates["c"]
    classes = meta.get("classes")
    n_classes = len(classes) if classes else meta.get("vocab_size")
    loss = resolve_loss(meta["task"], cand.loss, n_classes)
    spec = cand.model_spec(meta, output_size(meta["task"], loss, n_classes, meta.get("horizon") or 1))
    torch.manual_seed(0)
    net = models.create_model(spec["family"], **{k: v for k, v in spec.items() if k != "family"})
    x, y = (torch.from_numpy(a[:256]) for a in load_split(name, "train"))
    opt, criterion = torch.optim.Adam(net.parameters(), lr=0.01), make_loss(loss)
    for _ in range(steps):  # trained a little, so the weights are not the initialization's
        opt.zero_grad()
        criterion(net(x), loss_target(loss, y)).backward()
        opt.step()
    net.eval()
    info = CandidateInfo(
        candidate="c", dataset=name, model_spec=spec, task=meta["task"], loss=loss, n_classes=n_classes,
        classes=classes, data_meta=meta,
    ).dump()  # fmt: skip
    path = Path(f"{name}.pt")
    save_checkpoint(path, net.state_dict(), info)
    card = {"dataset": name, "candidate": "c", "task": meta["task"], "metrics": {}, "lineage": {"data": ingest}}
    open_registry(REGISTRY).register(name, path, card)
    return path
