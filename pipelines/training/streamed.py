"""Batches of this rank's shard of a Ray Dataset, streamed: for splits that do not fit a worker's memory.

Each epoch calls `ray.train.get_dataset_shard(name).iter_torch_batches(...)` once: Ray Train's DataConfig
split the dataset across the worker group with `streaming_split(equal=True)`, so within an epoch every row
goes to exactly one rank and every rank gets the same number of rows (DDP needs equal steps; fewer than
`world` rows are left out per epoch). In local mode the "shard" is the whole Dataset, iterated in process.

The shuffle, per epoch and seeded: the row groups' order is randomized once per run (the driver's list of row
groups to read: `training.data.Streamed.datasets`), then each rank draws its batches from a local shuffle
buffer of `SHUFFLE_BUFFER_BYTES` worth of rows, seeded with (seed, epoch, rank). Its cost: that buffer in
memory, and one gather of each batch's rows out of it (a copy per batch, which the in-memory path also makes).
Unlike the in-memory path's full permutation, rows far apart in the shards rarely meet in a batch: a global
shuffle would need a Ray Data `random_shuffle` (an all-to-all exchange of the whole split each epoch), which
this does not pay.

Each pass is a new Ray Data execution, whose start (planning, read tasks, the split coordinator's epoch barrier,
the first fetch) costs 50-90 ms of this process's CPU even on a small split. So the next pass is started in a
background thread (`NextPass`) as soon as a pass ends, with the next epoch's shuffle seed: the training pass's
successor starts while the epoch validates, validation's while the next epoch trains. A pass started for an
epoch that does not come next (a resume) is set aside, and `close` ends the one started after the last epoch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

SHUFFLE_BUFFER_BYTES = 64 * 2**20
# Rows asked of Ray Data at once, cut here into training batches: Ray's per-batch cost (Arrow -> NumPy -> torch,
# the shuffle buffer's gather) is paid per fetch, not per 256-row batch. The rows of a fetch are already
# shuffled, so consecutive slices of it are as random as batches drawn one by one.
FETCH_BYTES = 8 * 2**20
MAX_BATCHES_PER_FETCH = 32


class StreamBatches:
    """Iterate (x, y) batches (or groups of `group` batches) of this rank's shard of the Ray Dataset `name`.

    `split` holds the per-sample shapes and the split's rows (the driver read them from the shards' footers).
    After each epoch, `epoch_rows` and `epoch_digest` say which rows this rank iterated: their count, and the
    sum of a hash of each row's bytes (mod 2^64), so the driver can check that the ranks' shards were disjoint
    and covered the split (`training.rank_check`).
    """

    def __init__(
        self,
        name: str,
        split: dict[str, Any],
        batch_size: int,
        device,
        *,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        group: int = 1,
    ) -> None:
        self.name, self.batch_size, self.device = name, batch_size, device
        self.x_shape, self.y_shape, self.rows = split["x_shape"], split["y_shape"], split["rows"]
        self.shuffle, self.seed, self.rank, self.group = shuffle, seed, rank, group
        self.channels_last = False
        self.epoch = 0  # set by training.callbacks.EpochHistory: the shuffle's seed moves with it
        self.iterated = None  # the in-memory path's row indices: a stream has none (ShardLog skips it)
        self.epoch_rows = 0
        self.epoch_digest = 0
        self._ahead: NextPass | None = None

    def _row_bytes(self) -> int:
        return max(1, 4 * (math.prod(self.x_shape) + math.prod(self.y_shape)))  # float32 / int64: 4-8 bytes

    def _buffer_rows(self) -> int:
        return max(self._fetch_rows(), SHUFFLE_BUFFER_BYTES // self._row_bytes())

    def _fetch_rows(self) -> int:
        batches = max(1, min(MAX_BATCHES_PER_FETCH, FETCH_BYTES // (self._row_bytes() * self.batch_size)))
        return self.batch_size * batches

    def _shard(self):
        import ray.train

        return ray.train.get_dataset_shard(self.name)

    def _options(self, epoch: int) -> dict[str, Any]:
        options: dict[str, Any] = {"batch_size": self._fetch_rows(), "device": self.device, "drop_last": False}
        if self.shuffle:
            options |= {
                "local_shuffle_buffer_size": self._buffer_rows(),
                "local_shuffle_seed": (self.seed * 1_000_003 + epoch) * 1009 + self.rank,
            }
        return options

    def _fetches(self) -> Iterator[dict[str, Any]]:
        """This pass's fetches; its first may have been fetched in the background as the previous pass ended."""
        options, ahead, self._ahead = self._options(self.epoch), self._ahead, None
        if ahead is not None and ahead.options == options:
            fetches, first = ahead.result()
        else:
            if ahead is not None:  # started for another epoch (a resume, a sanity pass): not this one's rows
                ahead.close()
            fetches = iter(self._shard().iter_torch_batches(**options))
            first = next(fetches, None)
        if first is not None:
            yield first
            yield from fetches
        # Start the next pass now: its Ray Data execution (read tasks, the split, the shuffle buffer's first fill)
        # then runs while this rank trains or validates, instead of on the next pass's critical path.
        # The next epoch's shuffle seed: EpochHistory sets the same epoch number when that epoch starts.
        self._ahead = NextPass(self._shard(), self._options(self.epoch + 1 if self.shuffle else self.epoch))

    def _torch_batches(self) -> Iterator[tuple[Any, Any]]:
        import torch

        self.epoch_rows, self.epoch_digest = 0, 0
        for fetched in self._fetches():
            xs = fetched["x"].reshape(len(fetched["x"]), *self.x_shape)
            ys = fetched["y"].reshape(len(fetched["y"]), *self.y_shape)
            self.epoch_rows += len(xs)
            self.epoch_digest = (self.epoch_digest + rows_digest(xs)) % 2**64
            for x, y in zip(xs.split(self.batch_size), ys.split(self.batch_size), strict=True):
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                yield x, y

    def close(self) -> None:
        """Stop the pass started ahead (after the last epoch nobody iterates it)."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            ahead.close()

    def __iter__(self) -> Iterator[Any]:
        if self.group == 1:
            yield from self._torch_batches()
            return
        held: list = []
        for batch in self._torch_batches():  # K consecutive batches per item, as TensorBatches groups them
            held.append(batch)
            if len(held) == self.group:
                yield tuple(held)
                held = []
        if held:
            yield tuple(held)


class NextPass:
    """A pass over a shard started in a background thread: its iterator and its first fetch, once ready.

    The thread touches only Ray Data (no collectives), so a rank waiting here cannot deadlock DDP. It is a daemon:
    if a peer rank died, a streaming split's epoch barrier may never open, and the process must still exit."""

    JOIN_S = 30.0

    def __init__(self, shard, options: dict[str, Any]) -> None:
        import threading

        self.options = options
        self._fetches: Iterator[Any] | None = None
        self._first: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(shard,), name="stream-next-pass", daemon=True)
        self._thread.start()

    def _run(self, shard) -> None:
        try:
            self._fetches = iter(shard.iter_torch_batches(**self.options))
            self._first = next(self._fetches, None)
        except BaseException as err:  # re-raised in the training thread, where the pass is consumed
            self._error = err

    def result(self) -> tuple[Iterator[Any], Any]:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._fetches is not None
        return self._fetches, self._first

    def close(self) -> None:
        self._thread.join(self.JOIN_S)
        close = getattr(self._fetches, "close", None)
        if close is not None and not self._thread.is_alive():
            close()  # ends the pass's Ray Data execution (its read tasks) now rather than at garbage collection


def rows_digest(x) -> int:
    """Sum over rows of a 64-bit hash of each row's bytes (mod 2^64): equal for equal sets of rows, in any order.

    Vectorized (a batch costs a few array passes): each row's 32-bit words weighted by fixed odd 64-bit numbers,
    summed, then mixed (MurmurHash3's finalizer). All arithmetic wraps mod 2^64."""
    import numpy as np

    array = x.detach().cpu().contiguous().numpy()
    words = array.reshape(len(array), -1).view(np.uint32).astype(np.uint64)
    weights = np.random.default_rng(words.shape[1]).integers(0, 2**63, words.shape[1], dtype=np.uint64) * 2 + 1
    h = (words * weights).sum(axis=1, dtype=np.uint64)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    return int(h.sum(dtype=np.uint64))
