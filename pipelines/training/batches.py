"""In-memory batches sliced by index: small datasets never go through a per-sample DataLoader."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

Batch = tuple[torch.Tensor, torch.Tensor]


class TensorBatches:
    """Iterate (x, y) batches of this rank's shard of in-memory tensors.

    Every epoch the training set is reshuffled with (seed, epoch), then each of
    `world` ranks takes an equal slice, so all ranks run the same number of
    steps (DDP needs that) and together see the whole epoch's permutation but its
    last n % world rows (`left_out`, fewer than `world`, different each epoch).
    Evaluation shards are strided and unshuffled.

    With `group` K > 1 each item is a tuple of K consecutive (x, y) batches (the epoch's last item may
    hold fewer), for a module that runs one update per batch inside one Lightning step
    (`training.fused.FusedTaskModule`): the same batches in the same order, K of them per item.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        group: int = 1,
    ):
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        if group < 1:
            raise ValueError(f"group must be at least 1, got {group}")
        self.rank, self.world, self.group = rank, world, group
        self.epoch = 0
        self.iterated: torch.Tensor | None = None  # the rows of the latest epoch begun

    def _order(self) -> torch.Tensor:
        """This epoch's permutation of every row: the same on every rank (on the CPU)."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(len(self.x), generator=gen)

    def _indices(self) -> torch.Tensor:
        n = len(self.x)
        if not self.shuffle:
            return torch.arange(self.rank, n, self.world, device=self.x.device)
        order = self._order().to(self.x.device)
        per_rank = n // self.world
        return order[self.rank * per_rank : (self.rank + 1) * per_rank]

    @property
    def rows(self) -> int:
        """The split's rows (all ranks')."""
        return len(self.x)

    def left_out(self) -> torch.Tensor:
        """The rows no rank iterates this epoch: equal shards leave the permutation's last n % world to none."""
        n = len(self.x)
        if not self.shuffle:
            return torch.empty(0, dtype=torch.long)
        return self._order()[n - n % self.world :]

    def close(self) -> None:
        """Nothing runs ahead of an in-memory epoch (`StreamBatches.close` stops a stream's next pass)."""

    def __len__(self) -> int:
        n = len(self.x)
        per_rank = n // self.world if self.shuffle else len(range(self.rank, n, self.world))
        return math.ceil(per_rank / (self.batch_size * self.group))

    def __iter__(self) -> Iterator[Batch | tuple[Batch, ...]]:
        idx = self._indices()
        self.iterated = idx  # this epoch's shard, for the rank check (callbacks.ShardLog)
        rows = self.batch_size * self.group  # groups start at multiples of K batches: the same batch boundaries
        for start in range(0, len(idx), rows):
            sel = idx[start : start + rows]
            x, y = self.x[sel], self.y[sel]  # one gather per item; the batches of a group are views of it
            yield (x, y) if self.group == 1 else tuple(zip(x.split(self.batch_size), y.split(self.batch_size)))
