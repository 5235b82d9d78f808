"""The networks of the built-in families (nn.Modules; torch imported here only).

Each family's file (fnn.py, cnn.py, rnn.py) holds its config and builder and imports its network
from here when it builds one, so validating a config does not import torch. The attribute names are
the state_dict keys of every checkpoint ever written: renaming one breaks loading old models.
"""

from __future__ import annotations

import torch
from torch import nn

from models.layers import activation


class FNN(nn.Module):
    """Linear -> activation -> dropout blocks, then a linear head that emits logits.

    The output activation (Sigmoid or Softmax) is applied by the task, not here,
    so losses can work on logits for numerical safety.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: list[int],
        act: str = "relu",
        dropout: float = 0.0,
        embeddings: list[list[int]] | None = None,
    ):
        super().__init__()
        # embeddings: [cardinality, dim] per high-cardinality category; its integer codes are the last
        # len(embeddings) inputs. Without them the network (and its initialization order) is as it always was.
        embeddings = embeddings or []
        self.n_codes = len(embeddings)
        layers: list[nn.Module] = []
        width = in_features - self.n_codes + sum(dim for _, dim in embeddings)
        for size in hidden:
            layers += [nn.Linear(width, size), activation(act), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, out_features))
        self.net = nn.Sequential(*layers)
        if embeddings:
            self.embeds = nn.ModuleList(nn.Embedding(n, dim) for n, dim in embeddings)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, *input_shape) -> (B, out_features)
        x = x.flatten(1)
        if self.n_codes:
            dense, codes = x[:, : -self.n_codes], x[:, -self.n_codes :].long()  # (B, D), (B, C)
            vectors = [embed(codes[:, i]).to(dense.dtype) for i, embed in enumerate(self.embeds)]  # C x (B, E_i)
            x = torch.cat([dense, *vectors], dim=1)  # (B, D + sum E_i)
        return self.net(x)


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
        relative: bool = False,
    ):
        super().__init__()
        # Series: see each window relative to its last value and forecast the change from it (the level is
        # added back), so a trend carries the series to levels never seen in training.
        self.relative = relative and not vocab_size
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
        origin = x[:, -1:] if self.relative else None  # (B, 1)
        if origin is not None:
            x = x - origin
        seq = self.embed(x) if self.embed is not None else x.unsqueeze(-1).to(self.head[1].weight.dtype)
        out, _ = self.rnn(seq)  # (B, T, H)
        out = self.head(out[:, -1])  # (B, out_features)
        return out if origin is None else out + origin.to(out.dtype)
