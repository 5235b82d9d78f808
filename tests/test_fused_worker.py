"""Fused and unfused steps train the same weights through the train stage and the worker's own training function.

Every default dataset of params.yaml (so every family: FNN, CNN, LSTM, GRU) is ingested and prepared for real,
then its train stage runs as `make run` runs it on this CPU machine (`num_workers: auto`: Ray Train's local mode,
`worker.train_worker` in this process), with the default batch sizes and so the K values the default config
really uses, once fused and once with fusion off (`fused.MAX_FUSED = 1`). The training sets are cut short and
the epochs few, to keep the test small; early stopping has patience 1, so it stops some candidates early.
"""

from __future__ import annotations

import csv
import json
import os
import shutil

import pytest
import torch

from pipelines.handoffs.splits import read_split, write_split
from pipelines.training import fused

pytestmark = pytest.mark.slow

# Training rows kept (at most): several groups of K minibatches where K is small (digits' cnn-wide: 7 x 64 rows,
# text: 4 x 128), one short group per epoch where K = 64 (the hand-built test covers many such groups).
TRAIN_ROWS = {"digits": 500, "text": 1600}
VAL_ROWS = 256
EPOCHS, PATIENCE = 3, 1


def shrunk_params(dataset: str):
    """The default params of `dataset`, with few epochs and an impatient early stop (K does not depend on either)."""
    from pipelines.config import DatasetParams, PipelineParams

    raw = PipelineParams().datasets[dataset].model_dump(mode="json")
    raw["train"]["epochs"] = EPOCHS
    raw["train"]["early_stopping"]["patience"] = PATIENCE
    return DatasetParams.model_validate(raw)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Every default dataset ingested and prepared, its splits cut to a few rows; the cwd is the project."""
    from pipelines.config import PipelineParams
    from pipelines.paths import DatasetPaths
    from pipelines.stages.ingest import ingest
    from pipelines.stages.prepare import prepare

    root, before = tmp_path_factory.mktemp("fused-worker"), os.getcwd()
    os.chdir(root)
    try:
        for dataset in PipelineParams().datasets:
            ingest(dataset, shrunk_params(dataset))
            prepare(dataset, shrunk_params(dataset))
            for split, rows in (("train", TRAIN_ROWS.get(dataset)), ("val", VAL_ROWS)):
                folder = DatasetPaths(dataset).split_dir(split)
                x, y = read_split(folder)
                shutil.rmtree(folder)
                write_split(folder, x[:rows], y[:rows])
        yield root
    finally:
        os.chdir(before)


def default_group_sizes(dataset: str) -> dict[str, int]:
    """K of each candidate, from the default config and the prepared data, by the functions the worker uses."""
    import lightning.pytorch as pl

    from models.task_module import TaskModule
    from pipelines.config import ComputeParams
    from pipelines.paths import DatasetPaths
    from pipelines.stages.train_jobs import make_job
    from pipelines.training.worker import step_macs

    params, compute = shrunk_params(dataset), ComputeParams()
    meta = json.loads(DatasetPaths(dataset).prepared_meta.read_text())
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    sizes = {}
    for name, cand in params.train.candidates.items():
        job = make_job(dataset, name, cand, params, compute, meta)
        module = TaskModule(job.model_spec, job.optim, job.task, job.loss, job.n_classes)
        sizes[name] = fused.updates_per_step(trainer, step_macs(job, module, job.batch_size))
    return sizes


def train_stage(dataset: str, monkeypatch) -> tuple[dict, dict, list[int]]:
    """Run the train stage; its summary, each candidate's exported weights and history, and the K the worker used."""
    from pipelines.config import ComputeParams
    from pipelines.paths import DatasetPaths
    from pipelines.stages.train import train

    used: list[int] = []
    decide = fused.updates_per_step

    def recording(*args, **kwargs) -> int:
        used.append(decide(*args, **kwargs))
        return used[-1]

    monkeypatch.setattr(fused, "updates_per_step", recording)
    summary = train(dataset, shrunk_params(dataset), ComputeParams(storage_path="ray"))
    monkeypatch.setattr(fused, "updates_per_step", decide)
    where, outcome = DatasetPaths(dataset), {}
    for name in summary["candidates"]:
        weights = torch.load(where.candidate_checkpoint(name), weights_only=True)["state_dict"]
        with where.candidate_history(name).open() as rows:
            metrics = [
                {k: float(v) for k, v in row.items() if k.startswith(("train/", "val/"))}
                for row in csv.DictReader(rows)
            ]
        outcome[name] = (weights, metrics)
    return summary, outcome, used


@pytest.mark.parametrize(
    "dataset, stops_early", [("tabular", False), ("digits", False), ("text", True), ("series", False)]
)
def test_fused_and_unfused_train_stages_give_the_same_weights(project, dataset, stops_early, monkeypatch):
    sizes = default_group_sizes(dataset)
    summary, fused_run, used = train_stage(dataset, monkeypatch)
    assert summary["scaling"]["in_process"]  # the default CPU run: Ray Train's local mode
    assert used == list(sizes.values()) and min(used) > 1, (sizes, used)  # every candidate really fused
    monkeypatch.setattr(fused, "MAX_FUSED", 1)  # at most one update per Lightning step: unfused
    _, unfused_run, used = train_stage(dataset, monkeypatch)
    assert used == [1] * len(sizes)
    for name, (weights, metrics) in fused_run.items():
        unfused_weights, unfused_metrics = unfused_run[name]
        assert len(metrics) == len(unfused_metrics)  # early stopping stopped both at the same epoch
        for row, unfused_row in zip(metrics, unfused_metrics):
            assert row["val/loss"] == unfused_row["val/loss"]  # bit for bit
            assert row == pytest.approx(unfused_row, rel=1e-6)  # train/loss: one sum of K terms vs K sums
        for key, tensor in weights.items():
            assert torch.equal(tensor, unfused_weights[key]), (dataset, name, key)
    epochs = {name: c["epochs_run"] for name, c in summary["candidates"].items()}
    if stops_early:  # early stopping fired, at the same epoch both ways (above)
        assert max(epochs.values()) < EPOCHS, epochs
    print(f"{dataset}: K {sizes}, epochs run {epochs} of {EPOCHS}")  # shown with -s
