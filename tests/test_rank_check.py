"""The rank check's records on their own (training.rank_check): the 2-worker runs that use them are in
test_train_group.py (one stage) and test_ddp_flow.py (the main job)."""

import numpy as np
import pytest
import torch

from pipelines.training.batches import TensorBatches
from pipelines.training.rank_check import check, index_digest, shard_record, shards_partition, state_sha256


def records(loaders: list[TensorBatches], epochs: int = 2) -> list[dict]:
    """What each rank's ShardLog would note, with the rows each loader really yields."""
    out = []
    for loader in loaders:
        shards = []
        for epoch in range(epochs):
            loader.epoch = epoch
            rows = torch.cat([x for x, _ in loader]).view(-1).long().numpy()  # x holds each row's index
            shards.append(shard_record(epoch, rows, loader.left_out().numpy()))
        out.append({"shards": shards, "split_rows": len(loader.x), "state_sha256": "same"})
    return out


def ranks(n: int, world: int, seeds=None) -> list[TensorBatches]:
    x = torch.arange(n).float().view(-1, 1)
    seeds = seeds or [7] * world
    return [TensorBatches(x, x, 8, shuffle=True, seed=seeds[r], rank=r, world=world) for r in range(world)]


def test_digests_of_disjoint_sets_add_up_to_their_union():
    rng = np.random.default_rng(0)
    order = rng.permutation(1000)
    parts = np.split(order, [300, 650])
    assert sum(index_digest(p) for p in parts) % 2**64 == index_digest(np.arange(1000))
    assert index_digest(order[:10]) == index_digest(sorted(order[:10]))  # order-free
    assert index_digest([1, 2]) != index_digest([0, 3])  # not a plain sum of indices


@pytest.mark.parametrize("n,world", [(103, 2), (100, 2), (101, 3), (50, 1)])
def test_ranks_shards_are_disjoint_and_cover_the_split_but_the_left_out_rows(n, world):
    recs = records(ranks(n, world))
    assert shards_partition(recs, n)
    for epoch in range(2):
        assert len(recs[0]["shards"][epoch]["left_out"]) == n % world
    if world > 1:  # a reshuffled epoch deals each rank other rows (one rank always holds them all)
        assert recs[0]["shards"][0]["digest"] != recs[0]["shards"][1]["digest"]
    assert check(recs) == {"ranks": world, "identical_weights": True, "disjoint_shards": True}


def test_overlapping_or_unsynchronized_shards_are_caught():
    same = records(ranks(100, 2))
    same[1] = same[0]  # both ranks trained on rank 0's rows
    assert not shards_partition(same, 100)
    own_seed = records(ranks(100, 2, seeds=[7, 8]))  # each rank drew its own permutation: overlaps, gaps
    assert not shards_partition(own_seed, 100)
    whole = records(ranks(100, 1)) * 2  # each rank iterated the whole split
    assert not shards_partition(whole, 100)
    apart = [{**rec, "state_sha256": sha} for rec, sha in zip(records(ranks(100, 2)), "ab")]
    assert check(apart) == {"ranks": 2, "identical_weights": False, "disjoint_shards": True}
    assert check([{"rank": 0}]) is None  # no fit recorded (a failed candidate)


def test_state_digest_sees_every_bit_of_every_tensor():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    twin = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    twin.load_state_dict(net.state_dict())
    assert state_sha256(net) == state_sha256(twin)
    with torch.no_grad():
        twin[0].weight[1, 2] = torch.nextafter(twin[0].weight[1, 2], torch.tensor(1.0))  # one ulp
    assert state_sha256(net) != state_sha256(twin)
    twin.load_state_dict(net.state_dict())
    twin[1].running_mean += 1e-3  # a buffer, not a parameter
    assert state_sha256(net) != state_sha256(twin)
