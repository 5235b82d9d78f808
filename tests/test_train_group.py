"""One worker group per train stage: every candidate of a dataset trains in the same Ray Train workers, and a
candidate whose loss is not finite fails alone (recorded in the summary, no checkpoint) while the others train."""

import os

import pytest

from pipelines.errors import PipelineInputError

pytestmark = pytest.mark.slow


def run_train(dataset: str, ingest_params: dict | None, candidates: dict, storage, num_workers=2) -> dict:
    from pipelines.config import ComputeParams, DatasetParams, PipelineParams
    from pipelines.stages.ingest import ingest
    from pipelines.stages.prepare import prepare
    from pipelines.stages.train import train

    base = PipelineParams().datasets["tabular"].model_dump(mode="json")
    if ingest_params:
        base["ingest"] = ingest_params
    base["train"].update(epochs=3, candidates=candidates)
    params = DatasetParams.model_validate(base)
    ingest(dataset, params)
    prepare(dataset, params)
    return train(dataset, params, ComputeParams(num_workers=num_workers, storage_path=str(storage)))


TWO_CANDIDATES = {
    "relu": {"family": "fnn", "hidden": [16], "activation": "relu"},
    "sigmoid": {"family": "fnn", "hidden": [16], "activation": "sigmoid"},
}


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory, ray_instance):
    """One train stage of two candidates in a worker group of 2 (DDP): (its directory, its summary)."""
    where = tmp_path_factory.mktemp("two-workers")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(where)
        yield where, run_train("tabular", None, TWO_CANDIDATES, where / "ray")


def test_all_candidates_of_a_stage_train_in_one_worker_group(two_workers, ray_instance):
    from pipelines.paths import DatasetPaths

    in_tmp, summary = two_workers
    pids = {name: sorted(w["pid"] for w in c["workers"]) for name, c in summary["candidates"].items()}
    assert len(pids["relu"]) == 2 and pids["relu"] == pids["sigmoid"], pids  # the same two worker processes
    assert {c["status"] for c in summary["candidates"].values()} == {"finished"}
    assert summary["ray"]["gcs_address"] == ray_instance["gcs_address"]  # the instance it joined, not a new one
    for name in TWO_CANDIDATES:
        assert DatasetPaths("tabular").candidate_checkpoint(name).exists()
    assert not list((in_tmp / "ray").glob("*"))  # the run's checkpoints went once the models were exported
    # On a local instance the fit starts no DatasetManager (no Ray Datasets) and no PlacementGroupCleaner
    # (the instance ends with the run): two processes fewer per stage (pipelines/training/ray_private.py).
    from ray._private import state

    actors = [actor["ActorClassName"] for actor in state.actors().values()]
    started = set(actors)
    assert "TrainController" in started and "RayTrainWorker" in started, started
    assert not started & {"DatasetManager", "PlacementGroupCleaner"}, started
    # Ray Train's AutoscalingCoordinator is the one the stage started beside its fit (ray_private), not a second.
    assert actors.count("_AutoscalingCoordinatorActor") == 1, actors


def test_ddp_leaves_every_rank_bit_identical_after_training_on_disjoint_shards(two_workers):
    """DDP really all-reduces: each rank trains on its own half of every epoch, yet ends with the same bits.

    From the records each rank writes after a candidate's fit (pipelines/training/rank_check.py): a sha256 of
    its whole state_dict, and per epoch the count and an additive digest of the training rows it iterated.
    Identical weights alone would not do (ranks that each trained alone on the whole split agree too); on
    disjoint shards only the gradient all-reduce can make them agree. Checked by hand (2026-12-03): with
    DDP's wrapper skipped for 2 workers too (`RayTrainStrategy.configure_ddp` a no-op, each rank training
    alone on its shard), both candidates' ranks end with different digests and this test fails.
    """
    from pipelines.paths import DatasetPaths
    from tests.rank_helpers import assert_ranks_in_step, train_rows

    _, summary = two_workers
    assert_ranks_in_step(summary, train_rows(DatasetPaths("tabular").split_dir("train")))


REGRESSION = {"source": "sklearn:diabetes", "label": "target"}
# Plain SGD at lr 10 on an unscaled regression target: the loss overflows to inf in the first epoch.
DIVERGING = {"family": "fnn", "hidden": [16], "optimizer": "sgd", "lr": 10.0}


def test_a_candidate_whose_loss_is_not_finite_fails_alone(in_tmp, ray_instance):
    from pipelines.paths import DatasetPaths

    candidates = {"fine": {"family": "fnn", "hidden": [16]}, "diverges": DIVERGING}
    summary = run_train("diab", REGRESSION, candidates, in_tmp / "ray", num_workers="auto")
    # num_workers: auto on a local CPU-only machine: one worker holding all the cores, trained by Ray Train's
    # local mode in the stage's own process (here: this one), without asking the Ray instance for anything.
    assert summary["scaling"]["num_workers"] == 1 and summary["scaling"]["cpus_per_worker"] == os.cpu_count()
    assert summary["scaling"]["in_process"] and "ray" not in summary
    workers = [w for c in summary["candidates"].values() for w in c["workers"]]
    assert {(w["pid"], w["in_process"]) for w in workers} == {(os.getpid(), True)}, workers
    failed = summary["candidates"]["diverges"]
    assert failed["status"] == "failed"
    assert "datasets.diab.train.candidates.diverges" in failed["error"] and "in epoch 1" in failed["error"]
    assert "learning rate" in failed["error"] and "inputs" in failed["error"]
    assert "val_metrics" not in failed
    assert not DatasetPaths("diab").candidate_checkpoint("diverges").exists()  # no checkpoint for it
    assert summary["candidates"]["fine"]["status"] == "finished"
    assert DatasetPaths("diab").candidate_checkpoint("fine").exists()


def test_when_every_candidate_fails_the_stage_refuses_and_writes_nothing(in_tmp, ray_instance):
    from pipelines.paths import DatasetPaths

    with pytest.raises(PipelineInputError, match="every candidate failed.*candidates.diverges.*learning rate"):
        run_train("diab", REGRESSION, {"diverges": DIVERGING}, in_tmp / "ray", num_workers=1)
    assert not DatasetPaths("diab").train_dir.exists()


def test_local_mode_trains_the_same_weights_as_one_ray_worker(in_tmp, ray_instance):
    """`auto` (Ray Train's local mode, in this process) and `num_workers: 1` (a Ray worker group) are the same
    training: same shards, threads and seeds, dropout drawing the same masks, so the same best metrics to the bit."""
    dropped = {"fnn": {"family": "fnn", "hidden": [32], "dropout": 0.3}}
    curves = {}
    for workers in ("auto", 1):
        summary = run_train("tabular", None, dropped, in_tmp / f"ray-{workers}", num_workers=workers)
        assert summary["scaling"]["in_process"] == (workers == "auto")
        curves[workers] = summary["candidates"]["fnn"]["val_metrics"]
    assert curves["auto"] == curves[1], curves
