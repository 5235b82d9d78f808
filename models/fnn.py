"""Feed-forward network for tables."""

from __future__ import annotations

import torch
from torch import nn

from models.catalogue import register_family
from models.layers import activation


class FNN(nn.Module):
    """Linear -> activation -> dropout blocks, then a linear head that emits logits.

    The output activation (Sigmoid or Softmax) is applied by the task, not here,
    so losses can work on logits for numerical safety.
    """

    def __init__(self, in_features: int, out_features: int, hidden: list[int], act: str = "relu", dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden:
            layers += [nn.Linear(width, size), activation(act), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, out_features))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, *input_shape) -> (B, out_features)
        return self.net(x.flatten(1))


@register_family("fnn", tasks=("regression", "binary", "multiclass", "forecast"))
def build_fnn(
    *,
    input_shape: list[int],
    out_features: int,
    hidden: list[int],
    activation: str = "relu",
    dropout: float = 0.0,
    **_: object,
) -> FNN:
    in_features = 1
    for size in input_shape:  # images and windows are flattened
        in_features *= size
    return FNN(in_features, out_features, list(hidden), activation, dropout)
