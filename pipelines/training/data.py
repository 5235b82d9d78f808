"""Where a worker's batches come from: tensors in memory, or Ray Data shards streamed to it. One interface,
two implementations, picked once per side like `training.runtime`:

- `InMemory`: each worker reads the prepared train and val splits whole (`handoffs.splits.read_split`) onto its
  device and slices them by index (`training.batches.TensorBatches`): fastest for data that fits, but every
  worker holds a full copy, and every worker must be able to open the prepared folder.
- `Streamed`: the driver opens the splits as Ray Datasets (the shards' row groups, read by tasks on the
  driver's node) and hands them to the TorchTrainer; Ray Train splits each across the workers
  (`streaming_split(equal=True)`: every row to one rank per epoch, the same rows on every rank) and each worker
  iterates its shard (`training.streamed.StreamBatches`). A worker holds a few batches, never the split, and
  needs no file system shared with the driver: the rows reach it through Ray's object store.

The driver picks one (`data_of`, after `training.plan.data_loading` resolved `auto`) and passes its
`loop_config()`; the worker picks the same again from its config (`data_for`). Nothing here imports Ray or
torch at module level.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipelines.training.job import TrainJob

LOADING = "data_loading"  # the worker config's key: memory | stream
STREAMED = "streamed_splits"  # stream: each split's per-sample shapes and rows (workers cannot read the shards)
SPLITS = ("train", "val")
NODE_ID_LABEL = "ray.io/node-id"
READERS = 2  # read tasks per split at once
# Row groups one read task reads (handoffs.splits.ROW_GROUP_BYTES each, 8 MiB): Ray Data joins a task's output
# into blocks of up to 128 MiB (its target_max_block_size), so a task's row groups reach a worker as one block
# of about 64 MiB. A task per row group (8 MiB blocks) made streamed epochs ~10 % slower at 1M rows; one task
# for all of them no faster than 8 (BENCHMARKS.md, issue 20).
GROUPS_PER_READ = 8


class TrainData(ABC):
    kind: str

    # --- The driver's side.

    @abstractmethod
    def datasets(self) -> dict[str, Any] | None:
        """TorchTrainer's `datasets` (None: the workers read the data themselves)."""

    @abstractmethod
    def loop_config(self) -> dict[str, Any]:
        """The train_loop_config entries from which `data_for` picks this again in the worker."""

    # --- The worker's side.

    @abstractmethod
    def batches(self, job: TrainJob, device, channels_last: bool, rank: int, world: int, group: int) -> tuple:
        """This rank's (train, val) batch iterables: `TensorBatches` or `StreamBatches`."""


class InMemory(TrainData):
    kind = "memory"

    def datasets(self) -> dict[str, Any] | None:
        return None

    def loop_config(self) -> dict[str, Any]:
        return {LOADING: self.kind}

    def batches(self, job: TrainJob, device, channels_last: bool, rank: int, world: int, group: int) -> tuple:
        import torch

        from pipelines.handoffs.splits import read_split
        from pipelines.training.batches import TensorBatches

        def split(name: str) -> tuple[torch.Tensor, torch.Tensor]:
            x, y = (torch.from_numpy(a) for a in read_split(Path(job.data_dir) / name))
            x = x.to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return x, y.to(device)

        per_worker = max(1, job.batch_size // world)
        train = TensorBatches(
            *split("train"), per_worker, shuffle=True, seed=job.seed, rank=rank, world=world, group=group
        )
        val = TensorBatches(*split("val"), max(per_worker, 1024), shuffle=False, rank=rank, world=world)
        return train, val


class Streamed(TrainData):
    kind = "stream"

    def __init__(self, splits: dict[str, dict[str, Any]], data_dir: str | None = None, seed: int = 0) -> None:
        self.splits, self.data_dir, self.seed = splits, data_dir, seed

    @classmethod
    def of(cls, data_dir: str, seed: int) -> Streamed:
        """The driver's: the splits' shapes and rows from the shards' footers."""
        from pipelines.handoffs.splits import split_rows, split_shapes

        splits = {}
        for name in SPLITS:
            x_shape, y_shape = split_shapes(Path(data_dir) / name)
            splits[name] = {"x_shape": x_shape, "y_shape": y_shape, "rows": split_rows(Path(data_dir) / name)}
        return cls(splits, data_dir, seed)

    def datasets(self) -> dict[str, Any]:
        import numpy as np
        import ray
        import ray.data

        here = {NODE_ID_LABEL: ray.get_runtime_context().get_node_id()}  # Ray's default label of every node

        def read(name: str, order_seed: int | None = None):
            # Not ray.data.read_parquet: in Ray 2.60 it lists the files in a task that needs a free CPU, and a
            # worker group holding every CPU of its nodes would wait on it forever. These read tasks reserve
            # no CPU (Parquet decoding is cheap beside training), run on this (the driver's) node, where the
            # shards are, and hand the rows to the workers through Ray's object store. For training, the row
            # groups come in a seeded order, each read task taking the next GROUPS_PER_READ of it: not Ray
            # Data's randomize_block_order, an all-to-all step that holds back every block until the last is
            # read, so each epoch would put the whole split in the object store (and this process would map
            # it) before a batch is trained.
            groups = row_groups(Path(self.data_dir) / name)
            if order_seed is not None:
                groups = [groups[i] for i in np.random.default_rng(order_seed).permutation(len(groups))]
            items = ray.data.from_items(
                [{"path": path, "group": group} for path, group in groups],
                override_num_blocks=max(1, math.ceil(len(groups) / GROUPS_PER_READ)),  # contiguous runs of the order
            )
            return items.map_batches(
                read_row_groups,
                batch_size=None,  # a task per input block
                num_cpus=0,
                compute=ray.data.TaskPoolStrategy(size=READERS),
                label_selector=here,
            )

        # The row groups' order is shuffled once per run (seeded); each epoch's shuffle is the workers' buffer.
        return {"train": read("train", order_seed=self.seed), "val": read("val")}

    def loop_config(self) -> dict[str, Any]:
        return {LOADING: self.kind, STREAMED: self.splits}

    def batches(self, job: TrainJob, device, channels_last: bool, rank: int, world: int, group: int) -> tuple:
        from pipelines.training.streamed import StreamBatches

        per_worker = max(1, job.batch_size // world)
        train = StreamBatches(
            "train", self.splits["train"], per_worker, device, shuffle=True, seed=job.seed, rank=rank, group=group
        )
        val = StreamBatches("val", self.splits["val"], max(per_worker, 1024), device, shuffle=False, rank=rank)
        train.channels_last = val.channels_last = channels_last
        return train, val


def data_of(loading: str, data_dir: str, seed: int) -> TrainData:
    """The driver's choice: `loading` is memory or stream (`training.plan.data_loading` resolved auto)."""
    return Streamed.of(data_dir, seed) if loading == "stream" else InMemory()


def data_for(config: dict[str, Any]) -> TrainData:
    """The worker's choice, from its train_loop_config: the same as the driver's (`TrainData.loop_config`)."""
    return Streamed(config[STREAMED]) if config.get(LOADING) == "stream" else InMemory()


def row_groups(folder: Path) -> list[tuple[str, int]]:
    """(shard path, row group) of each row group of a split, in the split's order (from the shards' footers)."""
    import pyarrow.parquet as pq

    from pipelines.handoffs.splits import split_parts

    return [
        (str(part.resolve()), group)
        for part in split_parts(folder)
        for group in range(pq.ParquetFile(part).metadata.num_row_groups)
    ]


def read_row_groups(batch: dict[str, Any]) -> Iterator[Any]:
    """A Ray Data task: the batch's row groups, one at a time, as pyarrow tables (Ray Data joins them into
    blocks of up to its target_max_block_size)."""
    import pyarrow.parquet as pq

    for path, group in zip(batch["path"], batch["group"], strict=True):
        yield pq.ParquetFile(str(path)).read_row_group(int(group), columns=["x", "y"])
