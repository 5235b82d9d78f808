"""Hyperparameter search: Ray Tune + ASHA, each trial its own Ray Train run; the train stage exports the best trial."""

import math

import pytest

from pipelines.config import validate_params
from pipelines.errors import PipelineInputError
from tests.conftest import ROOT


def image_params(search: dict) -> dict:
    cand = {"family": "cnn", "filters": [8, 16], "dense": [32]}
    ds = {
        "modality": "image",
        "train": {"candidates": {"cnn": cand}, "search": search},
        "register": {"model_name": "m"},
    }
    return {"datasets": {"d": ds}}


@pytest.mark.parametrize(
    "space, key, words",
    [
        ({"hidden_size": {"type": "choice", "values": [32, 64]}}, "hidden_size", "not a knob of candidate 'cnn' (cnn)"),
        ({"lr": {"type": "loguniform", "low": 1e-2, "high": 1e-4}}, "lr", "must be below high"),
        ({"lr": {"type": "loguniform", "low": 0, "high": 1e-2}}, "lr", "loguniform needs low > 0"),
        ({"lr": {"type": "uniform", "low": 0.1, "high": 50}}, "lr", "50.0 is not a valid lr"),
        ({"kernel_size": {"type": "choice", "values": [3, 4]}}, "kernel_size", "must be odd"),
        ({"kernel_size": {"type": "uniform", "low": 1, "high": 5}}, "kernel_size", "integer knob"),
        ({"dropout": {"type": "choice", "low": 0.1}}, "dropout", "choice takes values"),
        ({"lr": {"type": "gaussian", "low": 0.1, "high": 0.2}}, "lr.type", "'loguniform'"),
        ({"lr": {"type": "uniform", "low": 0.1, "high": 0.2, "step": 1}}, "lr.step", "unknown key"),
    ],
)
def test_a_bad_search_space_is_refused_naming_the_key(space, key, words):
    with pytest.raises(PipelineInputError) as err:
        validate_params(image_params({"enabled": True, "candidate": "cnn", "space": space}), "params.yaml")
    assert f"params.yaml: datasets.d.train.search.space.{key}:" in str(err.value)
    assert words in str(err.value)


def test_search_names_an_existing_candidate_and_is_off_by_default():
    with pytest.raises(
        PipelineInputError, match=r"datasets.d.train.search.candidate: 'nope' is not a candidate; have: cnn"
    ):
        validate_params(
            image_params({"candidate": "nope", "space": {"lr": {"type": "uniform", "low": 0.1, "high": 0.2}}})
        )
    ok = validate_params(
        image_params(
            {
                "candidate": "cnn",
                "space": {
                    "lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2},
                    "dense": {"type": "choice", "values": [[16], [32]]},
                },
            }
        )
    )
    assert ok.datasets["d"].train.search.enabled is False
    from pipelines.config import PipelineParams

    assert all(d.train.search is None for d in PipelineParams().datasets.values())


def searched_digits(in_tmp, monkeypatch, loading: str, samples: int, epochs: int) -> dict:
    """The digits train stage with a Tune search over its CNN (1 worker per trial: 2 trials on 2 CPUs at once)."""
    from pipelines.config import ComputeParams, DatasetParams, PipelineParams
    from pipelines.stages.ingest import ingest
    from pipelines.stages.prepare import prepare
    from pipelines.stages.train import train
    from pipelines.training import cluster

    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # Ray's worker processes import this checkout's pipelines
    base = PipelineParams().datasets["digits"].model_dump(mode="json")
    base["train"].update(
        epochs=epochs,
        early_stopping={"patience": 100},  # only ASHA stops trials early here
        data_loading=loading,
        candidates={"cnn": {"family": "cnn", "filters": [8, 16], "dense": [32]}},
        search={
            "enabled": True,
            "candidate": "cnn",
            "num_samples": samples,
            "max_concurrent_trials": 2,
            "grace_period": 1,
            "reduction_factor": 2,
            "space": {
                "lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2},
                "dense": {"type": "choice", "values": [[16], [48]]},
            },
        },
    )
    params = DatasetParams.model_validate(base)
    compute = ComputeParams(num_workers=1, storage_path=str(in_tmp / "ray"))
    ingest("digits", params)
    prepare("digits", params)
    try:
        return train("digits", params, compute)
    finally:
        cluster.shutdown_ray()


@pytest.mark.slow
def test_a_streamed_datasets_trials_read_their_rows_through_ray_data(in_tmp, monkeypatch):
    # Each trial streams its splits through Ray Data, as the stage's other candidates would (two trials, one
    # epoch: a streamed trial's start-up, its Ray Data datasets, costs ~20 s here; the search itself is below).
    summary = searched_digits(in_tmp, monkeypatch, "stream", samples=2, epochs=1)
    assert summary["data_loading"] == "stream"
    trials = summary["candidates"]["cnn"]["searched"]["trials"]
    assert len(trials) == 2 and not [t for t in trials if t["error"]], trials
    # The best trial's worker read its rows through Ray Data (its placement record), not the split whole.
    (worker,) = summary["candidates"]["cnn"]["workers"]
    assert worker["data_loading"] == "stream" and worker["shards"], worker


@pytest.mark.slow
def test_tune_search_runs_concurrent_trials_stops_weak_ones_and_exports_the_best(in_tmp, monkeypatch):
    from models.checkpoint import load_checkpoint
    from pipelines.paths import DatasetPaths

    epochs = 3  # ASHA rungs at epochs 1 and 2
    summary = searched_digits(in_tmp, monkeypatch, "memory", samples=4, epochs=epochs)

    assert summary["data_loading"] == "memory"
    found = summary["candidates"]["cnn"]["searched"]
    trials = found["trials"]
    assert len(trials) == 4 and not [t for t in trials if t["error"]], trials
    # ASHA stopped at least one trial before the last epoch.
    assert min(t["epochs_run"] for t in trials) < epochs, trials
    assert max(t["epochs_run"] for t in trials) == epochs
    # Trials ran at the same time (two at once), not one after another.
    spans = sorted((t["started"], t["ended"]) for t in trials)
    assert any(spans[i + 1][0] < spans[i][1] for i in range(len(spans) - 1)), spans
    # The chosen trial is the one with the best val/loss over all trials and epochs.
    assert found["metric"] == "val/loss" and found["mode"] == "min"
    best = min(trials, key=lambda t: t["best_metric"])
    assert found["trial"] == best["trial_id"] and found["knobs"] == best["knobs"]
    assert math.isclose(summary["candidates"]["cnn"]["val_metrics"]["val/loss"], best["best_metric"], rel_tol=1e-6)

    # The exported checkpoint is the best trial's, and loads as any candidate's does.
    where = DatasetPaths("digits")
    net, info = load_checkpoint(where.candidate_checkpoint("cnn"))
    assert info["searched"] == best["knobs"]
    assert info["model_spec"]["dense"] == best["knobs"]["dense"]
    assert math.isclose(info["optim"]["lr"], best["knobs"]["lr"])
    assert net.training is False
    assert where.candidate_history("cnn").read_text().startswith("epoch,")
    # The Ray runs (Tune's and every trial's) were removed once the best checkpoint was exported.
    assert not list((in_tmp / "ray").glob("*")), list((in_tmp / "ray").iterdir())
