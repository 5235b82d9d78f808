"""Convolutional network for images (MNIST-style)."""

from __future__ import annotations

import torch
from torch import nn

from models.catalogue import register_family
from models.layers import activation


class CNN(nn.Module):
    """[conv -> activation -> max-pool] blocks, then a dense head that emits logits."""

    def __init__(
        self,
        in_channels: int,
        height: int,
        width: int,
        out_features: int,
        filters: list[int],
        kernel_size: int = 3,
        pool: int = 2,
        dense: list[int] | None = None,
        act: str = "relu",
        dropout: float = 0.0,
    ):
        super().__init__()
        blocks: list[nn.Module] = []
        channels, h, w = in_channels, height, width
        for n_filters in filters:
            blocks += [
                nn.Conv2d(channels, n_filters, kernel_size, padding=kernel_size // 2),
                nn.BatchNorm2d(n_filters),
                activation(act),
            ]
            if pool > 1 and min(h, w) >= pool:  # small images (8x8 digits) run out of room to pool
                blocks.append(nn.MaxPool2d(pool))
                h, w = h // pool, w // pool
            channels = n_filters
        self.features = nn.Sequential(*blocks)
        head: list[nn.Module] = [nn.Flatten()]
        width_in = channels * h * w
        for size in dense or []:
            head += [nn.Linear(width_in, size), activation(act), nn.Dropout(dropout)]
            width_in = size
        head.append(nn.Linear(width_in, out_features))
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, out_features)
        return self.head(self.features(x))


@register_family("cnn", tasks=("binary", "multiclass"))
def build_cnn(
    *,
    input_shape: list[int],
    out_features: int,
    filters: list[int],
    kernel_size: int = 3,
    pool: int = 2,
    dense: list[int] | None = None,
    activation: str = "relu",
    dropout: float = 0.0,
    **_: object,
) -> CNN:
    c, h, w = input_shape
    return CNN(c, h, w, out_features, list(filters), kernel_size, pool, list(dense or []), activation, dropout)
