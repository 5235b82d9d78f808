"""Training on data streamed through Ray Data (`train.data_loading`, pipelines/training/data.py).

- local mode (one worker in the stage's process): the same table trained from tensors in memory and
  streamed from the Ray Dataset reaches the same validation accuracy within 1 point;
- a worker group of 2 whose memory (`train.memory_per_worker`) is too small for the training split:
  `auto` streams, DDP keeps the ranks bit-identical on disjoint shards whose rows add up to the split's,
  and the model is evaluated and registered through the stages.
"""

import numpy as np
import pandas as pd
import pytest

from pipelines.config import ComputeParams, DatasetParams

pytestmark = pytest.mark.slow


def _table(path, rows: int = 4000, seed: int = 0) -> None:
    """A binary label from a noisy linear score of 8 numbers and one category."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 8))
    color = rng.choice(["red", "green", "blue"], rows)
    score = x @ rng.normal(size=8) + np.where(color == "red", 1.0, -0.5) + rng.normal(scale=0.5, size=rows)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(8)]).assign(color=color, label=(score > 0).astype(int))
    frame.to_csv(path, index=False)


def _params(source, loading: str, epochs: int = 2) -> DatasetParams:
    return DatasetParams(
        modality="table",
        ingest={"source": str(source), "label": "label"},
        train={
            "epochs": epochs,
            "batch_size": 64,
            "data_loading": loading,
            "candidates": {"fnn": {"family": "fnn", "hidden": [32], "lr": 0.003}},
        },
        register={"model_name": "streamed-fnn"},
    )


def _stages_to_train(dataset: str, params: DatasetParams, compute: ComputeParams) -> dict:
    from pipelines.stages.ingest import ingest
    from pipelines.stages.prepare import prepare
    from pipelines.stages.train import train

    ingest(dataset, params)
    prepare(dataset, params)
    return train(dataset, params, compute)


def test_streamed_and_in_memory_reach_the_same_accuracy_in_local_mode(in_tmp, ray_instance, monkeypatch):
    _table(in_tmp / "t.csv")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # local mode: `auto` workers on this machine's own CPUs
    compute = ComputeParams(storage_path=str(in_tmp / "ray"))
    accuracy = {}
    for loading in ("memory", "stream"):
        summary = _stages_to_train("t", _params(in_tmp / "t.csv", loading), compute)
        assert summary["data_loading"] == loading and summary["scaling"]["in_process"]
        fnn = summary["candidates"]["fnn"]
        assert fnn["status"] == "finished" and fnn["workers"][0]["data_loading"] == loading
        accuracy[loading] = fnn["val_metrics"]["val/accuracy"]
    print(f"val accuracy: {accuracy}")
    assert accuracy["memory"] > 0.85
    assert abs(accuracy["stream"] - accuracy["memory"]) <= 0.01


def test_a_split_too_big_for_the_workers_memory_streams_to_a_worker_group_and_registers(in_tmp, ray_instance):
    from pipelines.config import PipelineParams
    from pipelines.handoffs.splits import split_nbytes
    from pipelines.paths import DatasetPaths
    from pipelines.stages import evaluate, register

    _table(in_tmp / "t.csv")
    cap = 128 * 1024  # each worker's `memory`, reserved by Ray: the training split alone takes more
    params = PipelineParams.model_validate(
        {
            "datasets": {"t": _params(in_tmp / "t.csv", "auto").model_dump(mode="json")},
            "train": {"num_workers": 2, "memory_per_worker": cap, "storage_path": str(in_tmp / "ray")},
        }
    )
    summary = _stages_to_train("t", params.datasets["t"], params.train)
    assert split_nbytes(DatasetPaths("t").split_dir("train")) > cap
    assert summary["data_loading"] == "stream" and summary["scaling"]["memory_per_worker"] == cap
    fnn = summary["candidates"]["fnn"]
    assert fnn["status"] == "finished" and {w["data_loading"] for w in fnn["workers"]} == {"stream"}
    # DDP on streamed shards: the same weights on both ranks, whose rows each epoch were equal halves that add
    # up (by their contents' digest) to the training split: no row twice, none missed (the split's rows are even).
    assert fnn["workers"][0]["split_rows"] % 2 == 0
    assert fnn["rank_check"] == {"ranks": 2, "identical_weights": True, "disjoint_shards": True}
    assert fnn["val_metrics"]["val/accuracy"] > 0.85
    evaluate.evaluate("t", params.evaluate, choice=params.datasets["t"].evaluate)
    version = register.register(params, "t")
    assert version.card["candidate"] == "fnn"


class _DatasetBatches:
    """`StreamBatches` over a Ray Dataset given directly (outside a Ray Train worker there is no dataset shard)."""

    @staticmethod
    def of(dataset, epoch: int = 0):
        import torch

        from pipelines.training.streamed import StreamBatches

        class Own(StreamBatches):
            def _shard(self):
                return dataset

        batches = Own("train", {"x_shape": [2], "y_shape": [], "rows": 1000}, 8, torch.device("cpu"), shuffle=True)
        batches.epoch = epoch
        return batches


def _epoch_ids(batches) -> list[int]:
    return [int(i) for _, y in batches for i in y]


def _fresh_epoch_ids(dataset, epoch: int) -> list[int]:
    """The epoch's rows in order, from batches that never ran a pass before (nothing started ahead)."""
    batches = _DatasetBatches.of(dataset, epoch)
    try:
        return _epoch_ids(batches)
    finally:
        batches.close()


def test_the_next_pass_started_ahead_gives_each_epoch_the_rows_and_order_of_a_fresh_start(ray_instance):
    import threading

    import ray.data

    ids = np.arange(1000)
    rows = [{"x": np.array([i, -i], np.float32), "y": int(i)} for i in ids]
    dataset = ray.data.from_items(rows, override_num_blocks=1)
    batches = _DatasetBatches.of(dataset)
    orders = []
    for epoch in range(3):
        batches.epoch = epoch  # as EpochHistory sets it; from the second epoch on, the pass was started ahead
        orders.append(_epoch_ids(batches))
        assert sorted(orders[-1]) == list(ids) and batches.epoch_rows == 1000
        assert batches._ahead is not None and batches._ahead.options == batches._options(epoch + 1)
        assert orders[-1] == _fresh_epoch_ids(dataset, epoch)  # the same seeded shuffle
    assert orders[0] != orders[1] != orders[2]
    batches.epoch = 7  # a resume: the pass started for epoch 3 is not this epoch's and is set aside
    assert _epoch_ids(batches) == _fresh_epoch_ids(dataset, 7)
    batches.close()
    assert not [t for t in threading.enumerate() if t.name == "stream-next-pass" and t.is_alive()]


def test_the_training_row_groups_are_read_in_a_seeded_shuffled_order_and_validation_in_file_order(
    tmp_path, ray_instance, monkeypatch
):
    """Each epoch's shuffle is a worker's bounded buffer, so the order the row groups reach it in must itself be
    shuffled: read in file order, a split sorted by time or label would train in long runs of one kind."""
    import ray.data

    from pipelines.handoffs import splits
    from pipelines.training.data import GROUPS_PER_READ, Streamed, row_groups

    rows, group_rows = 2400, 100
    monkeypatch.setattr(splits, "ROW_GROUP_BYTES", group_rows * 12)  # a row: 2 float32 x and an int32 y
    ids = np.arange(rows, dtype=np.int32)
    x = np.stack([ids, -ids], axis=1).astype(np.float32)
    for name in ("train", "val"):
        splits.write_split(tmp_path / name, x, ids, shard_bytes=rows * 12 // 2)  # 2 shards of 12 row groups
    groups = row_groups(tmp_path / "train")
    assert len(groups) == 24 > 2 * GROUPS_PER_READ  # several read tasks, each of several row groups

    def group_order(dataset) -> list[int]:
        """The row groups (by their first row's id) in the order the dataset yields their rows: a group's rows
        come together."""
        blocks = [batch["y"] for batch in dataset.iter_batches(batch_size=None, batch_format="numpy")]
        assert len(blocks) == -(-len(groups) // GROUPS_PER_READ)  # a read task per GROUPS_PER_READ groups, one block
        read = np.concatenate(blocks)
        assert sorted(read.tolist()) == ids.tolist()  # every row once
        group = read // group_rows
        order = group[np.flatnonzero(np.diff(group, prepend=-1))]
        assert len(order) == len(groups)
        return (order * group_rows).tolist()

    context = ray.data.DataContext.get_current()
    monkeypatch.setattr(context.execution_options, "preserve_order", True)  # the read tasks' outputs in task order
    file_order = list(range(0, rows, group_rows))
    orders = {}
    for seed in (0, 1):
        datasets = Streamed.of(str(tmp_path), seed).datasets()
        orders[seed] = group_order(datasets["train"])
        assert group_order(datasets["val"]) == file_order
    assert sorted(orders[0]) == file_order and orders[0] != file_order and orders[1] != orders[0]
    assert group_order(Streamed.of(str(tmp_path), 0).datasets()["train"]) == orders[0]  # the same seed, the same order
