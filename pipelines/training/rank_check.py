"""Did DDP keep the ranks in step? Each rank's weights and training shards, as small records anyone can check.

After a candidate's fit every rank notes, in its placement record (`training.store`):

- `state_sha256`: one sha256 over every tensor of its model's state_dict (parameters and buffers, on the
  CPU, in state_dict order). Gradients all-reduced every step leave the same bits on every rank.
- `shards`: per epoch it trained, the rows of the training split it iterated: how many, and an
  order-free 64-bit digest of their indices (`index_digest`), plus the rows no rank got that epoch
  (`left_out`: equal shards drop the last n % world rows of the epoch's permutation; fewer than world).

The digest of a set of indices is the sum, modulo 2**64, of a 64-bit hash of each index, so the
digests of disjoint sets add up to the digest of their union. If the ranks' row counts and digests
(with the left-out rows') add up to those of the whole split, the shards are disjoint and cover it
(a wrong shard matches only by a 64-bit accident). A record stays a few dozen bytes an epoch, however
large the data.

Identical weights alone prove nothing: ranks that each trained alone on the whole split would agree too.
Identical weights on disjoint shards do: only the gradient all-reduce can have made them agree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import numpy as np

MASK = (1 << 64) - 1


def state_sha256(module: Any) -> str:
    """sha256 over the names, dtypes, shapes and bytes of every tensor in module.state_dict(), on the CPU."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        # contiguous(): the logical values, not the memory layout (channels_last weights on a GPU)
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _mix64(indices: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: neighbouring indices get unrelated 64-bit values (uint64 wraps silently)."""
    z = indices.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def index_digest(indices: Iterable[int] | np.ndarray) -> int:
    """An order-free digest of a set of row indices; disjoint sets' digests add up (mod 2**64) to their union's."""
    return int(_mix64(np.asarray(indices, dtype=np.int64)).sum(dtype=np.uint64))


def shard_record(epoch: int, indices: np.ndarray, left_out: np.ndarray) -> dict[str, Any]:
    """One epoch of one rank's training shard."""
    return {
        "epoch": epoch,
        "rows": len(indices),
        "digest": f"{index_digest(indices):016x}",
        "left_out": sorted(int(i) for i in left_out),
    }


def streamed_record(epoch: int, rows: int, digest: int) -> dict[str, Any]:
    """One epoch of one rank's streamed shard: its rows and the sum of their contents' hashes
    (`training.streamed.rows_digest`); a stream has no row indices."""
    return {"epoch": epoch, "rows": rows, "digest": f"{digest:016x}", "streamed": True}


def _common_epochs(records: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    by_epoch: dict[int, list[dict[str, Any]]] = {}
    for record in records:
        for shard in record.get("shards") or []:
            by_epoch.setdefault(shard["epoch"], []).append(shard)
    return [shards for shards in by_epoch.values() if len(shards) == len(records)]


def streamed_partition(records: list[dict[str, Any]], split_rows: int, contents_digest: int | None) -> bool:
    """Every epoch that all ranks recorded: equal shards of n - n % world rows between them, and, when no row
    is left out (n % world == 0) and the split's `contents_digest` is known, rows that add up to the split's."""
    common, world = _common_epochs(records), len(records)
    if not common:
        return False
    for shards in common:
        if {s["rows"] for s in shards} != {split_rows // world}:
            return False
        total = sum(int(s["digest"], 16) for s in shards) & MASK
        if split_rows % world == 0 and contents_digest is not None and total != contents_digest:
            return False
    return True


def shards_partition(records: list[dict[str, Any]], split_rows: int) -> bool:
    """Every epoch that all ranks recorded: their shards are disjoint and, with the left-out rows, the whole split."""
    whole = index_digest(np.arange(split_rows))
    common = _common_epochs(records)
    if not common:
        return False
    for shards in common:
        left_out = shards[0]["left_out"]
        if any(s["left_out"] != left_out for s in shards):  # every rank drew the same permutation
            return False
        rows = sum(s["rows"] for s in shards) + len(left_out)
        total = (sum(int(s["digest"], 16) for s in shards) + index_digest(left_out)) & MASK
        if rows != split_rows or total != whole:
            return False
    return True


def check(records: list[dict[str, Any]], contents_digest: int | None = None) -> dict[str, Any] | None:
    """The verdict on one candidate's ranks (None when they recorded no fit, e.g. it failed).

    contents_digest: streamed training, the training split's `training.streamed.rows_digest` (a stream's shards
    are checked by their rows' contents)."""
    if not records or any("state_sha256" not in r for r in records):
        return None
    rows = records[0]["split_rows"]
    streamed = records[0].get("data_loading") == "stream"
    return {
        "ranks": len(records),
        "identical_weights": len({r["state_sha256"] for r in records}) == 1,
        "disjoint_shards": streamed_partition(records, rows, contents_digest)
        if streamed
        else shards_partition(records, rows),
    }
