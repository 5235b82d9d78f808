import torch

from pipelines.training.batches import TensorBatches


def test_ranks_see_disjoint_equal_shards_covering_the_epoch():
    x = torch.arange(103).float().view(-1, 1)
    world = 2
    loaders = [TensorBatches(x, x, 8, shuffle=True, seed=3, rank=r, world=world) for r in range(world)]
    seen = [torch.cat([b[0] for b in loader]).view(-1) for loader in loaders]
    assert len(seen[0]) == len(seen[1]) == 51  # equal steps on every rank (DDP needs that)
    assert len(loaders[0]) == len(loaders[1]) == 7
    assert not set(seen[0].tolist()) & set(seen[1].tolist())


def test_shuffle_changes_with_epoch_and_is_reproducible():
    x = torch.arange(50).float()
    loader = TensorBatches(x, x, 50, shuffle=True, seed=1)
    first = next(iter(loader))[0]
    loader.epoch = 1
    second = next(iter(loader))[0]
    loader.epoch = 0
    assert torch.equal(next(iter(loader))[0], first)
    assert not torch.equal(first, second)


def test_evaluation_shards_cover_every_row_once():
    x = torch.arange(11).float()
    rows = sorted(
        v for r in range(3) for b in TensorBatches(x, x, 2, shuffle=False, rank=r, world=3) for v in b[0].tolist()
    )
    assert rows == list(range(11))
