"""The CNN family: a convolutional network for images (MNIST-style)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from models.candidate import CandidateBase, check_positive
from models.catalogue import register_family

if TYPE_CHECKING:
    from models.networks import CNN


class CnnCandidate(CandidateBase):
    family: Literal["cnn"]
    filters: list[int] = Field(
        default_factory=lambda: [16, 32], min_length=1, description="Channels of each conv block"
    )
    kernel_size: int = Field(3, ge=1, le=15)
    pool: int = Field(2, ge=1, le=4, description="Max-pool size after each block (1: no pooling)")
    dense: list[int] = Field(default_factory=lambda: [64], description="Hidden sizes of the dense head")

    @model_validator(mode="after")
    def _check(self) -> CnnCandidate:
        check_positive(self.filters, "filters")
        check_positive(self.dense, "dense")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size: must be odd (same padding), got {self.kernel_size}")
        return self

    def architecture(self, meta: Mapping[str, Any]) -> dict[str, Any]:
        return {"filters": self.filters, "kernel_size": self.kernel_size, "pool": self.pool, "dense": self.dense}


@register_family("cnn", candidate=CnnCandidate, modalities=("image",), tasks=("binary", "multiclass"))
def build_cnn(
    *,
    input_shape: list[int],
    out_features: int,
    filters: list[int],
    kernel_size: int,
    pool: int,
    dense: list[int],
    activation: str,
    dropout: float,
) -> CNN:
    from models.networks import CNN

    c, h, w = input_shape
    return CNN(c, h, w, out_features, list(filters), kernel_size, pool, list(dense), activation, dropout)
