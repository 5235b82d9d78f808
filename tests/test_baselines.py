"""Classical baselines beside the neural candidates, and what happens to a candidate that fails.

Fast tests fit the baselines on real built-in tables (ingest + prepare in-process); the slow ones run the
real train, evaluate and register stages on one local Ray instance: a weak candidate that loses to the
baselines is said to lose, a candidate whose loss becomes NaN is reported and never registered, and a run
where every candidate fails leaves the registry untouched.
"""

from __future__ import annotations

import json

import pytest

from pipelines.evaluation.comparison import comparison_table, unbeaten, unbeaten_message


def prepared(dataset: str, source: str, candidates: dict | None = None, epochs: int = 1):
    """A PipelineParams with one table dataset, ingested and prepared in the current directory."""
    from pipelines.config import PipelineParams
    from pipelines.stages.ingest import ingest
    from pipelines.stages.prepare import prepare

    base = PipelineParams().datasets["tabular"].model_dump(mode="json")
    base["ingest"] = {"source": source, "label": "target"}
    base["register"] = {"model_name": f"{dataset}-model"}
    if candidates is not None:
        base["train"].update(epochs=epochs, candidates=candidates)
    params = PipelineParams.model_validate({"datasets": {dataset: base}, "train": {"num_workers": 1}})
    ingest(dataset, params.datasets[dataset])
    prepare(dataset, params.datasets[dataset])
    return params


def baselines_of(dataset: str) -> dict:
    from pipelines.evaluation.baselines import compute_baselines
    from pipelines.stages.prepare import load_split, read_meta

    splits = {split: load_split(dataset, split) for split in ("train", "val", "test")}
    return compute_baselines(dataset, read_meta(dataset).dump(), splits)


def test_classification_baselines_on_breast_cancer_are_sane_and_deterministic(in_tmp):
    prepared("bc", "sklearn:breast_cancer")
    first = baselines_of("bc")
    assert set(first) == {"logistic_regression", "hist_gradient_boosting"}
    for name, scores in first.items():
        assert scores["test/accuracy"] > 0.9 and scores["val/accuracy"] > 0.9, (name, scores)
        # The candidates' scorer: the same scalar metrics, per split; no per-class dicts.
        assert {"test/f1_macro", "test/precision_macro", "val/recall_macro", "test/iou_macro"} <= set(scores)
        assert all(isinstance(v, float) for v in scores.values())
    assert baselines_of("bc") == first  # seeded by the dataset's seed: the same numbers every run


def test_regression_baselines_on_diabetes_score_in_the_targets_units(in_tmp):
    prepared("diab", "sklearn:diabetes")
    scores = baselines_of("diab")
    assert set(scores) == {"ridge", "hist_gradient_boosting"}
    assert scores["ridge"]["test/r2"] > 0.3 and scores["ridge"]["val/r2"] > 0.3, scores
    assert scores["hist_gradient_boosting"]["test/r2"] > 0.2, scores
    # Errors in the target's own units (disease progression, 25..346), whatever scale the target was trained in.
    assert 20 < scores["ridge"]["test/rmse"] < 100 and 20 < scores["ridge"]["test/mae"] < 100


def report(candidates: dict, baselines: dict, mode: str = "max", failed: dict | None = None) -> dict:
    return {
        "dataset": "d",
        "task": "binary",
        "primary_metric": "accuracy",
        "mode": mode,
        "candidates": candidates,
        "baselines": baselines,
        "failed_candidates": failed or {},
        "best_candidate": next(iter(candidates)),
        "best": {"candidate": next(iter(candidates))},
    }


def test_the_verdict_names_each_baseline_no_candidate_beats():
    r = report(
        {"a": {"test/accuracy": 0.95, "test/f1_macro": 0.9}, "b": {"test/accuracy": 0.9, "test/f1_macro": 0.8}},
        {"logistic_regression": {"test/accuracy": 0.93}, "hist_gradient_boosting": {"test/accuracy": 0.97}},
        failed={"c": "datasets.d.train.candidates.c: the training loss became nan in epoch 1"},
    )
    entries = unbeaten(r)
    assert [e["baseline"] for e in entries] == ["hist_gradient_boosting"]  # a (0.95) beats the logistic one
    assert unbeaten_message(entries[0]) == (
        "No neural candidate beats hist_gradient_boosting on test/accuracy (a 0.9500 vs 0.9700): "
        "a neural network may not be the right tool for this data"
    )
    table = comparison_table(r)
    assert "| baseline: hist_gradient_boosting | 0.9700 | – |" in table  # same columns, '–' where it has none
    assert "| c (failed) | – | – |" in table and "c failed in training" in table
    assert unbeaten_message(entries[0]) in table
    # Lower is better for rmse and perplexity; a tie is not a win; a NaN score beats nothing.
    assert not unbeaten(report({"a": {"test/accuracy": 2.0}}, {"naive": {"test/accuracy": 2.5}}, mode="min"))
    assert unbeaten(report({"a": {"test/accuracy": 2.5}}, {"naive": {"test/accuracy": 2.5}}, mode="min"))
    assert unbeaten(report({"a": {"test/accuracy": float("nan")}}, {"naive": {"test/accuracy": 0.1}}))


def test_evaluate_and_register_refuse_a_run_whose_candidates_all_failed(in_tmp):
    from pipelines.atomic import write_json
    from pipelines.errors import PipelineInputError
    from pipelines.paths import DatasetPaths
    from pipelines.stages import evaluate, register

    params = prepared("allfail", "sklearn:iris")
    where = DatasetPaths("allfail")
    where.train_dir.mkdir(parents=True)
    failed = {"family": "fnn", "status": "failed", "error": "the loss became nan in epoch 2", "epochs_run": 2}
    summary = {"dataset": "allfail", "candidates": {"c": failed | {"seconds": 0.1}}, "data_fingerprint": "x"}
    write_json(where.train_summary, summary)
    with pytest.raises(PipelineInputError, match="every candidate failed in training: the loss became nan in epoch 2"):
        evaluate.evaluate("allfail", params.evaluate)
    # A metrics.json that names a failed candidate (stale or edited by hand) is refused by register too.
    where.evaluate_dir.mkdir(parents=True)
    write_json(where.metrics_file, report({"c": {"test/accuracy": 0.1}}, {}) | {"dataset": "allfail"})
    with pytest.raises(PipelineInputError, match="best_candidate 'c' is not a trained candidate"):
        register.register(params, "allfail")
    assert not (in_tmp / "data/registry").exists()


# -- the real stages on one local Ray instance -------------------------------------------------------------

# SGD with momentum at lr 10 (the most params allow): the loss overflows to inf, then NaN, within the first
# epoch, whether the target is standardized or not (checked by hand in plain PyTorch on this table).
EXPLODES = {"family": "fnn", "hidden": [8], "optimizer": "sgd", "lr": 10.0, "momentum": 0.9}
# One epoch at a tiny learning rate: barely moves from its initialization, so the baselines win.
WEAK = {"family": "fnn", "hidden": [4], "optimizer": "sgd", "lr": 1.0e-6, "momentum": 0.0}


@pytest.mark.slow
def test_a_failed_candidate_is_reported_and_a_weak_one_is_said_to_lose(in_tmp, ray_instance):
    from pipelines.orchestration.artifacts import metrics_rows, verdict
    from pipelines.paths import DatasetPaths
    from pipelines.registry.local import LocalModelRegistry
    from pipelines.stages import evaluate, register, train

    params = prepared("mixed", "sklearn:diabetes", {"weak": WEAK, "explodes": EXPLODES})
    params = params.model_copy(update={"train": params.train.model_copy(update={"storage_path": str(in_tmp / "ray")})})
    summary = train.train("mixed", params.datasets["mixed"], params.train)
    assert summary["candidates"]["explodes"]["status"] == "failed"
    error = summary["candidates"]["explodes"]["error"]
    assert "datasets.mixed.train.candidates.explodes" in error and "in epoch 1" in error and "learning rate" in error

    result = evaluate.evaluate("mixed", params.evaluate)
    assert list(result["candidates"]) == ["weak"] and result["best_candidate"] == "weak"
    assert result["failed_candidates"] == {"explodes": error}
    assert set(result["baselines"]) == {"ridge", "hist_gradient_boosting"}
    assert result["unbeaten_baselines"] == ["ridge", "hist_gradient_boosting"]
    on_disk = json.loads(DatasetPaths("mixed").metrics_file.read_text())
    assert on_disk["unbeaten_baselines"] == result["unbeaten_baselines"] and "explodes" in on_disk["failed_candidates"]

    lines = evaluate.log_lines("mixed", result, "plots")
    assert any(
        line.startswith("evaluate[mixed]: No neural candidate beats ridge on test/rmse (weak ") for line in lines
    )
    assert any("explodes FAILED in training" in line for line in lines)
    table = DatasetPaths("mixed").plots_dir.joinpath("comparison.md").read_text()
    assert "| baseline: ridge |" in table and "| explodes (failed) |" in table and "No neural candidate beats" in table
    # The Prefect metrics artifact: baselines and the failed candidate as rows, the verdict in its description.
    rows = {row["candidate"]: row for row in metrics_rows(in_tmp, "mixed")}
    assert rows["ridge"]["family"] == "baseline" and rows["ridge"]["test/rmse"] < rows["weak"]["test/rmse"]
    assert rows["explodes"]["best"] == "failed" and rows["explodes"]["test/rmse"] is None
    assert "No neural candidate beats hist_gradient_boosting on test/rmse" in verdict(in_tmp, "mixed")

    version = register.register(params, "mixed")
    assert version.card["candidate"] == "weak" and "explodes" not in version.card["candidates_compared"]
    assert set(version.card["baselines"]) == {"ridge", "hist_gradient_boosting"}
    registry = LocalModelRegistry(in_tmp / "data/registry")
    assert registry.list_models() == ["mixed-model"] and registry.list_versions("mixed-model") == [1]


@pytest.mark.slow
def test_when_every_candidate_makes_nan_nothing_is_registered(in_tmp, ray_instance):
    from pipelines.errors import PipelineInputError
    from pipelines.paths import DatasetPaths
    from pipelines.stages import evaluate, register, train

    params = prepared("nan", "sklearn:diabetes", {"explodes": EXPLODES})
    params = params.model_copy(update={"train": params.train.model_copy(update={"storage_path": str(in_tmp / "ray")})})
    with pytest.raises(PipelineInputError, match=r"every candidate failed.*datasets\.nan\.train\.candidates\.explodes"):
        train.train("nan", params.datasets["nan"], params.train)
    assert not DatasetPaths("nan").train_dir.exists()
    # The stages after it have nothing to work on: each refuses, and the registry is never created.
    for stage in (lambda: evaluate.evaluate("nan", params.evaluate), lambda: register.register(params, "nan")):
        with pytest.raises((PipelineInputError, FileNotFoundError)):
            stage()
    assert not (in_tmp / "data/registry").exists()
