"""Weights-only checkpoints: plain tensors and JSON-like metadata, never pickled code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.catalogue import create_model

FORMAT = "dl-pipeline-checkpoint/1"


def save_checkpoint(path: str | Path, net_state: dict[str, torch.Tensor], info: dict[str, Any]) -> None:
    torch.save({"format": FORMAT, "state_dict": net_state, **info}, path)


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the architecture from its spec and load the weights (weights_only=True)."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} file")
    spec = dict(blob["model_spec"])
    family = spec.pop("family")  # the catalogue's key; the rest are the builder's arguments
    net = create_model(family, **spec)
    net.load_state_dict(blob["state_dict"])
    net.eval()
    info = {k: v for k, v in blob.items() if k != "state_dict"}
    return net, info


def net_state_from_lightning(ckpt_file: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The architecture's weights (prefix 'net.') and epoch from a full Lightning checkpoint."""
    ckpt = torch.load(ckpt_file, map_location="cpu", weights_only=True)
    state = {k[len("net.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    return state, {"epoch": int(ckpt.get("epoch", -1))}
