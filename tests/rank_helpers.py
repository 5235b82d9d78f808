"""The DDP rank check read from a train summary's raw per-rank records (pipelines/training/rank_check.py),
by the test's own arithmetic rather than the stage's verdict alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipelines.handoffs.splits import split_rows
from pipelines.training.rank_check import index_digest


def train_rows(prepared_train: Path) -> int:
    return split_rows(prepared_train)


def assert_ranks_in_step(
    summary: dict[str, Any], rows: int, world: int = 2, resumed_at: dict[str, int] | None = None
) -> None:
    """Every candidate: all ranks end with the same state_dict bits, having iterated, in every epoch, disjoint
    equal shards that with the epoch's left-over rows (rows % world) make up the whole training split.
    resumed_at: candidate -> the first epoch (from 0) its ranks trained after a resume; their shard log starts there."""
    whole = index_digest(np.arange(rows))
    for name, candidate in summary["candidates"].items():
        workers = candidate["workers"]
        assert [w["rank"] for w in workers] == list(range(world)), name
        assert len({w["state_sha256"] for w in workers}) == 1, (name, [w["state_sha256"] for w in workers])
        assert {w["split_rows"] for w in workers} == {rows}, name
        epochs = [[s["epoch"] for s in w["shards"]] for w in workers]
        start = (resumed_at or {}).get(name, 0)
        assert epochs == [list(range(start, candidate["epochs_run"]))] * world, name
        for shards in zip(*(w["shards"] for w in workers)):
            left_out = shards[0]["left_out"]
            assert all(s["left_out"] == left_out for s in shards) and len(left_out) == rows % world
            assert {s["rows"] for s in shards} == {rows // world}, name  # the same steps on each rank
            digests = sum(int(s["digest"], 16) for s in shards) + index_digest(left_out)
            assert digests % 2**64 == whole, (name, shards[0]["epoch"])  # disjoint shards of the whole split
        first, second = workers[0]["shards"][:2]
        assert first["digest"] != second["digest"], name  # a new shard each epoch
        assert candidate["rank_check"] == {"ranks": world, "identical_weights": True, "disjoint_shards": True}
