"""LSTM and GRU for sequences: next-word prediction (token ids in) and forecasting (values in).

nn.LSTM / nn.GRU run the whole sequence in one call (cuDNN kernels on a GPU),
never a Python loop over time steps.
"""

from __future__ import annotations

import torch
from torch import nn

from models.catalogue import register_family
from models.layers import activation

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}


class RecurrentNet(nn.Module):
    """Embedding (text) or a value projection (series) -> stacked RNN -> dense head on the last step."""

    def __init__(
        self,
        cell: str,
        out_features: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        vocab_size: int | None = None,
        embedding_dim: int = 32,
        act: str = "tanh",
    ):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embedding_dim) if vocab_size else None
        input_size = embedding_dim if vocab_size else 1
        self.rnn = CELLS[cell](
            input_size, hidden_size, num_layers=num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0
        )
        self.head = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(hidden_size, hidden_size),
            activation(act),
            nn.Linear(hidden_size, out_features),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # text: (B, T) int64 ids -> (B, T, E); series: (B, T) values -> (B, T, 1)
        seq = self.embed(x) if self.embed is not None else x.unsqueeze(-1).to(self.head[1].weight.dtype)
        out, _ = self.rnn(seq)  # (B, T, H)
        return self.head(out[:, -1])  # (B, out_features)


def _build(cell: str):
    def build(
        *,
        out_features: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        vocab_size: int | None = None,
        embedding_dim: int = 32,
        activation: str = "tanh",
        **_: object,
    ) -> RecurrentNet:
        return RecurrentNet(cell, out_features, hidden_size, num_layers, dropout, vocab_size, embedding_dim, activation)

    return build


register_family("lstm", tasks=("next_word", "forecast"))(_build("lstm"))
register_family("gru", tasks=("next_word", "forecast"))(_build("gru"))
