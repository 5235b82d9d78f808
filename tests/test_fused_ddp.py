"""Fused steps under DDP (training.fused): 2 Ray workers, K minibatch updates per Lightning step, still all-reduce
every update. Each rank trains on its own half of every epoch, yet both end bit-identical, and with the weights
(and BatchNorm buffers) of the same fit trained one Lightning step per minibatch, to the bit: the same averaged
gradients at the same updates, in the same order.

Checked by hand (2026-12-04): without the strategy's pre_backward in FusedTaskModule._backward (no all-reduce
at fused updates) the fused ranks end with two different digests, neither the unfused one; without
`_broadcast_buffers`, fused rank 0 still matches the unfused fit but rank 1's BatchNorm stats differ."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.slow

# A small CNN with BatchNorm (buffers: DDP broadcasts them once per Lightning step, fused or not) and dropout
# (the random draws must come in the same order). 1 x 8 x 8 images, 2 classes.
SPEC = {
    "family": "cnn",
    "input_shape": [1, 8, 8],
    "out_features": 2,
    "filters": [8],
    "kernel_size": 3,
    "pool": 2,
    "dense": [16],
    "activation": "relu",
    "dropout": 0.2,
}
# 610 rows at global batch 8 (4 per rank): 305 rows, 77 minibatches per rank and epoch, the last of one row;
# K = 64 (fused.MAX_FUSED, the model is tiny), so each epoch is a group of 64 updates and one of 13.
ROWS, BATCH, EPOCHS, K = 610, 8, 3, 64


def job(candidate: str, data_dir: str):
    from pipelines.training.job import TrainJob

    return TrainJob(
        candidate=candidate,
        model_spec=SPEC,
        optim={"optimizer": "adam", "lr": 1e-2},
        task="multiclass",
        loss="cce",
        n_classes=2,
        data_dir=data_dir,
        seed=5,
        epochs=EPOCHS,
        batch_size=BATCH,
        monitor="val/loss",
        mode="min",
        patience=EPOCHS,
    )


def images(rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, 1, 8, 8, generator=g)
    return x, (x[:, 0, :4].mean((1, 2)) > x[:, 0, 4:].mean((1, 2))).long()


def test_fused_ddp_keeps_ranks_bit_identical_and_trains_as_unfused_ddp(in_tmp, ray_instance, monkeypatch):
    from pipelines.handoffs.splits import write_split
    from pipelines.training import worker
    from pipelines.training.fit import fit_candidates
    from pipelines.training.job import Scaling
    from tests.fused_ddp_worker import UNFUSED, train_worker_with_unfused_candidates

    for split, (rows, seed) in {"train": (ROWS, 1), "val": (128, 2)}.items():
        x, y = images(rows, seed)
        write_split(in_tmp / split, x.numpy(), y.numpy())
    monkeypatch.setattr(worker, "train_worker", train_worker_with_unfused_candidates)  # what the workers run
    jobs = [job("fused", str(in_tmp)), job(f"{UNFUSED}cnn", str(in_tmp))]
    outcomes = fit_candidates(jobs, Scaling(num_workers=2, cpus_per_worker=1), str(in_tmp / "ray"), "fused-ddp")

    fused, unfused = outcomes["fused"], outcomes[f"{UNFUSED}cnn"]
    assert [r["updates_per_step"] for r in fused.placement] == [K, K]
    assert [r["updates_per_step"] for r in unfused.placement] == [1, 1]
    for outcome in (fused, unfused):
        assert outcome.status == "finished" and len(outcome.history) == EPOCHS
        ranks = outcome.placement
        assert [r["rank"] for r in ranks] == [0, 1]
        for first, second in zip(ranks[0]["shards"], ranks[1]["shards"]):  # disjoint halves: no rank saw it all
            assert first["rows"] == second["rows"] == ROWS // 2 and first["digest"] != second["digest"]
    # Every rank of both fits holds the same state_dict bits (parameters and BatchNorm buffers): the all-reduce
    # ran at every fused update, exactly as at every unfused one.
    digests = {(o.candidate, r["rank"]): r["state_sha256"] for o in (fused, unfused) for r in o.placement}
    assert len(set(digests.values())) == 1, digests
    assert [row["val/loss"] for row in fused.history] == [row["val/loss"] for row in unfused.history]
    saved = [torch.load(o.best_checkpoint_uri, weights_only=False)["state_dict"] for o in (fused, unfused)]
    for key, tensor in saved[0].items():
        assert torch.equal(tensor, saved[1][key]), key
