"""The FNN family: a feed-forward network for tables (and flattened images or series windows)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from models.candidate import CandidateBase, check_positive
from models.catalogue import register_family

if TYPE_CHECKING:
    from models.networks import FNN


class FnnCandidate(CandidateBase):
    family: Literal["fnn"] = "fnn"
    hidden: list[int] = Field(default_factory=lambda: [64, 32], min_length=1)

    @model_validator(mode="after")
    def _check(self) -> FnnCandidate:
        check_positive(self.hidden, "hidden")
        return self

    def architecture(self, meta: Mapping[str, Any]) -> dict[str, Any]:
        # Tables with high-cardinality categories: [cardinality, dim] of each embedded one (None: no embeddings,
        # the network an FNN always was; old checkpoints without the key load the same).
        return {"hidden": self.hidden, "embeddings": meta.get("embeddings") or None}


@register_family(
    "fnn",
    candidate=FnnCandidate,
    modalities=("table", "image", "series"),
    tasks=("regression", "binary", "multiclass", "forecast"),
)
def build_fnn(
    *,
    input_shape: list[int],
    out_features: int,
    hidden: list[int],
    activation: str,
    dropout: float,
    embeddings: list[list[int]] | None = None,
) -> FNN:
    from models.networks import FNN

    in_features = 1
    for size in input_shape:  # images and windows are flattened
        in_features *= size
    return FNN(in_features, out_features, list(hidden), activation, dropout, embeddings)
