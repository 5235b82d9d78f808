"""The main job, for real and with its default params: Prefect flow -> DVC stages -> Ray Train -> registry.

One default run trains all four families on their built-in data (FNN on a table,
CNN on digits, LSTM/GRU on text and on a series); every test below reads it.
"""

import json
import re
import subprocess

import numpy as np
import pytest
import yaml

from pipelines.config import RegisterParams
from pipelines.handoffs.splits import read_split
from pipelines.paths import DVC_LOCK, PARAMS_FILE, DatasetPaths
from tests.conftest import BIN, copy_project, project_env

pytestmark = pytest.mark.slow
DATASETS = ["tabular", "digits", "text", "series"]
STAGES = ["ingest", "prepare", "train", "evaluate", "register"]
REGISTRY = RegisterParams().registry  # the default model registry, a path inside the project


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory, prefect_api):
    """One flow run of the repo's own params.yaml in a fresh copy of the project, through Prefect's test harness."""
    from pipelines.orchestration.flow import training_pipeline

    project = copy_project(tmp_path_factory.mktemp("project"))
    result = training_pipeline(workdir=str(project))
    return project, result


def dvc(project, *args) -> str:
    proc = subprocess.run([str(BIN / "dvc"), *args], cwd=project, capture_output=True, text=True, env=project_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def ran_stages(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


def metrics(project, dataset: str) -> dict:
    return yaml.safe_load((project / DatasetPaths(dataset).metrics_file).read_text())


def test_each_dataset_runs_its_chain_in_order(flow_run):
    _, result = flow_run
    expected = [f"{stage}@{ds}" for ds in DATASETS for stage in STAGES]
    assert [s["stage"] for s in result["stages"]] == expected
    assert not any(s["skipped"] for s in result["stages"])
    assert sorted(result["datasets"]) == sorted(DATASETS)


def test_by_default_each_train_stage_trains_in_its_own_process_with_its_share_of_the_cores(flow_run):
    """`num_workers: auto` on this CPU-only machine: Ray Train's local mode, so the run starts no Ray instance."""
    from pipelines.orchestration.lanes import cpu_share, lane_count

    project, result = flow_run
    assert result["ray_start_s"] == 0  # no `ray start` for this run
    share = cpu_share(lane_count(None, len(DATASETS)))
    for name in DATASETS:
        summary = json.loads((project / DatasetPaths(name).train_summary).read_text())
        assert summary["scaling"]["in_process"] and "ray" not in summary, summary["scaling"]
        workers = [w for c in summary["candidates"].values() for w in c["workers"]]
        assert {(w["in_process"], w["cpus"]) for w in workers} == {(True, share)}, workers
        assert len({w["pid"] for w in workers}) == 1  # all its candidates in one process


def test_every_family_beats_its_stated_baseline(flow_run):
    project, _ = flow_run
    tabular = metrics(project, "tabular")
    meta = yaml.safe_load((project / DatasetPaths("tabular").prepared_meta).read_text())
    majority = (
        max(np.bincount(read_split(project / DatasetPaths("tabular").split_dir("test"))[1])) / meta["sizes"]["test"]
    )
    for name, scores in tabular["candidates"].items():  # both ReLU and Sigmoid
        assert scores["test/accuracy"] > majority, name
    for name in ("logistic_regression", "hist_gradient_boosting"):  # the classical baselines, beside them
        assert tabular["baselines"][name]["test/accuracy"] > majority, name

    assert metrics(project, "digits")["best"]["test/accuracy"] >= 0.95  # CNN on the 8x8 digits

    text = metrics(project, "text")
    for name in ("lstm", "gru"):
        assert text["candidates"][name]["test/perplexity"] < 0.5 * text["baselines"]["unigram"]["test/perplexity"], name

    series = metrics(project, "series")
    for name in ("lstm", "gru"):
        test = series["candidates"][name]
        assert test["test/rmse"] < test["test/naive_last_rmse"], name


def test_registered_models_reproduce_their_recorded_test_metrics(flow_run):
    from pipelines.evaluation.scoring import score
    from pipelines.registry.local import LocalModelRegistry
    from pipelines.stages.evaluate import model_outputs

    project, result = flow_run
    registry = LocalModelRegistry(project / REGISTRY)
    for dataset in DATASETS:
        registered = result["datasets"][dataset]["registered"]
        version = registry.get(registered["name"])  # verifies the checkpoint's sha256
        assert version.version == registered["version"] == 1
        card = version.card
        assert card["dataset"] == dataset and card["candidate"] == metrics(project, dataset)["best_candidate"]
        assert card["lineage"]["data"]["prepared_dvc_md5"]  # written by DVC for this run
        assert len(card["lineage"]["git"]["commit"]) == 40
        assert {"torch", "ray", "lightning"} <= set(card["lineage"]["packages"])

        meta = yaml.safe_load((project / DatasetPaths(dataset).prepared_meta).read_text())
        test_x, test_y = read_split(project / DatasetPaths(dataset).split_dir("test"))
        logits, info = model_outputs(version.checkpoint, test_x)
        again, _ = score(meta, logits, info["loss"], test_x, test_y)
        recorded = card["metrics"]
        for key, value in again.items():
            if isinstance(value, float):
                assert value == pytest.approx(recorded[f"test/{key}"], rel=1e-6, abs=1e-9), (dataset, key)


def test_outputs_are_where_the_readme_says(flow_run):
    project, _ = flow_run
    for dataset in DATASETS:
        report = metrics(project, dataset)
        plots = project / DatasetPaths(dataset).plots_dir
        assert (plots / "learning_curves.png").stat().st_size > 1000
        assert report["best_candidate"] in (plots / "comparison.md").read_text()
    assert (project / DatasetPaths("digits").plots_dir / "confusion_cnn-wide.png").exists()
    assert (project / DatasetPaths("series").plots_dir / "forecast_lstm.png").exists()
    assert len(list((project / DatasetPaths("digits").evaluate_dir / "confusion").glob("*.csv"))) == 2
    shown = dvc(project, "metrics", "show")
    for words in ("fnn-relu", "cnn-wide", "perplexity", "naive_last_rmse"):
        assert words in shown


def test_dvc_plots_draw_the_learning_curves_by_their_split_metric_column(flow_run):
    """dvc.yaml's learning plot names `y: val/loss`, the history.csv column as logged: DVC renders it."""
    project, _ = flow_run
    proc = subprocess.run(
        [str(BIN / "dvc"), "plots", "show", "--json"], cwd=project, capture_output=True, text=True, env=project_env()
    )
    assert proc.returncode == 0, proc.stderr
    learning = (DatasetPaths("tabular").evaluate_dir / "learning" / "fnn-relu.csv").as_posix()
    [plot] = json.loads(proc.stdout)["data"][learning]
    layers = json.dumps(plot["content"]["layer"])
    assert '"field": "val/loss"' in layers and '"field": "epoch"' in layers
    values = plot["content"]["data"]["values"]
    assert values and all(float(row["val/loss"]) > 0 for row in values)


def test_dvc_lock_lists_every_stage(flow_run):
    project, _ = flow_run
    lock = yaml.safe_load((project / DVC_LOCK).read_text())
    assert sorted(lock["stages"]) == sorted(f"{s}@{d}" for s in STAGES for d in DATASETS)


def test_dvc_repro_reruns_nothing_then_only_what_a_param_touches(flow_run):
    project, _ = flow_run
    assert ran_stages(dvc(project, "repro")) == []

    params = yaml.safe_load((project / PARAMS_FILE).read_text())
    params["datasets"]["tabular"]["train"]["epochs"] = 3
    (project / PARAMS_FILE).write_text(yaml.safe_dump(params, sort_keys=False))
    assert ran_stages(dvc(project, "repro")) == ["train@tabular", "evaluate@tabular", "register@tabular"]
    assert (project / REGISTRY / "tabular-fnn/versions/v2/card.json").exists()


def predict_cli(project, *args) -> None:
    proc = subprocess.run(
        [str(BIN / "python"), "-m", "pipelines.predict", *args, "--registry", str(project / REGISTRY)],
        capture_output=True,
        text=True,
        env=project_env(),
        cwd=project,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_predict_with_registered_models_reproduces_the_recorded_test_metrics(flow_run, tmp_path):
    import pandas as pd

    from pipelines.config import PrepareParams
    from pipelines.modalities.common import shuffled_split
    from pipelines.registry.local import LocalModelRegistry

    project, _ = flow_run
    registry = LocalModelRegistry(project / REGISTRY)
    # v1 was promoted; a later version only takes the alias if it scores better on test accuracy.
    assert (
        registry.aliases("tabular-fnn")["production"] == 1
        or registry.get("tabular-fnn", "production").card["metrics"]["test/accuracy"]
        > registry.get("tabular-fnn", 1).card["metrics"]["test/accuracy"]
    )

    # A table: the raw test rows as a user's CSV (original units, class names as labels).
    raw = pd.read_parquet(project / DatasetPaths("tabular").raw_dir / "table.parquet")
    rows = raw.iloc[shuffled_split(len(raw), PrepareParams())["test"]]
    rows.to_csv(tmp_path / "rows.csv", index=False)
    predict_cli(project, "tabular-fnn:production", str(tmp_path / "rows.csv"), str(tmp_path / "out.csv"))
    out = pd.read_csv(tmp_path / "out.csv")
    accuracy = float((out["prediction"].astype(str) == rows["target"].astype(str).to_numpy()).mean())
    assert accuracy == pytest.approx(
        registry.get("tabular-fnn", "production").card["metrics"]["test/accuracy"], abs=1e-6
    )  # float32 metric

    # Images: the raw test digits as a .npz of pixels and labels.
    with np.load(project / DatasetPaths("digits").raw_dir / "images.npz") as images:
        idx = shuffled_split(len(images["y"]), PrepareParams())["test"]
        np.savez(tmp_path / "digits.npz", x=images["x"][idx], y=images["y"][idx])
        labels = images["y"][idx]
    predict_cli(project, "digits-cnn:1", str(tmp_path / "digits.npz"), str(tmp_path / "digits.csv"))
    out = pd.read_csv(tmp_path / "digits.csv")
    accuracy = float((out["prediction"].astype(int).to_numpy() == labels).mean())
    assert accuracy == pytest.approx(registry.get("digits-cnn", 1).card["metrics"]["test/accuracy"], abs=1e-6)

    # A series: the whole sunspot series as a CSV; the last test-size forecasts are the test windows.
    series = pd.read_parquet(project / DatasetPaths("series").raw_dir / "series.parquet")
    series.to_csv(tmp_path / "series.csv", index=False)
    predict_cli(project, "sunspots-forecast", str(tmp_path / "series.csv"), str(tmp_path / "forecast.csv"))
    out = pd.read_csv(tmp_path / "forecast.csv")
    card = registry.get("sunspots-forecast").card
    n_test = yaml.safe_load((project / DatasetPaths("series").prepared_meta).read_text())["sizes"]["test"]
    test = out.dropna().tail(n_test)
    rmse = float(np.sqrt(np.mean((test["prediction"] - test["actual"]) ** 2)))
    assert rmse == pytest.approx(card["metrics"]["test/rmse"], rel=1e-4)
    assert np.isnan(out["actual"].iloc[-1]) and np.isfinite(out["prediction"].iloc[-1])  # the step after the end


def test_a_registered_language_model_completes_a_sentence(flow_run, tmp_path):
    project, _ = flow_run
    line = predict_cli(project, "complete", "text-next-word", "the for statement is used to", "--words", "6").strip()
    words = line.split()
    assert words[:6] == ["the", "for", "statement", "is", "used", "to"] and len(words) == 12
    (tmp_path / "prompts.txt").write_text("the value of\nan exception is\n")
    predict_cli(project, "text-next-word", str(tmp_path / "prompts.txt"), str(tmp_path / "next.csv"))
    import pandas as pd

    out = pd.read_csv(tmp_path / "next.csv")
    assert list(out["prompt"]) == ["the value of", "an exception is"] and out["prediction"].notna().all()
