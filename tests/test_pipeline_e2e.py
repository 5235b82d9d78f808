"""The whole pipeline, for real: Prefect flow -> DVC stages -> Ray Train (2 workers) -> registry."""
import re
import subprocess

import numpy as np
import pytest
import yaml

from tests.conftest import BIN, copy_project, project_env, small_params

pytestmark = pytest.mark.slow
STAGES = ["ingest", "prepare", "train", "evaluate", "register"]


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory):
    """One flow run in a fresh copy of the project, through Prefect's test harness."""
    from prefect.testing.utilities import prefect_test_harness

    from pipelines.flow import training_pipeline

    project = copy_project(tmp_path_factory.mktemp("project"), small_params())
    with prefect_test_harness(server_startup_timeout=120):
        result = training_pipeline(workdir=str(project))
    return project, result


def dvc(project, *args) -> str:
    proc = subprocess.run([str(BIN / "dvc"), *args], cwd=project, capture_output=True, text=True, env=project_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def ran_stages(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


def test_flow_registers_a_model_that_reproduces_its_recorded_test_metrics(flow_run, monkeypatch):
    from pipelines.evaluate import predict_arrays, score
    from pipelines.model_registry import LocalModelRegistry

    project, result = flow_run
    assert [s["stage"] for s in result["stages"]] == STAGES
    assert not any(s["skipped"] for s in result["stages"])

    registry = LocalModelRegistry(project / "data/registry")
    version = registry.get("tabular-fnn")  # verifies the checkpoint's sha256
    assert version.version == result["registered"]["version"] == 1
    card = version.card
    assert card["candidate"] in ("fnn-relu", "fnn-tanh")
    assert card["lineage"]["data"]["prepared_dvc_md5"]  # written by DVC for this run
    assert len(card["lineage"]["git"]["commit"]) == 40
    assert {"torch", "ray", "pytorch-lightning"} <= set(card["lineage"]["packages"])

    with np.load(project / "data/prepared/test.npz") as test:
        pred = predict_arrays(version.checkpoint, test["x"])
        meta = yaml.safe_load((project / "data/prepared/meta.json").read_text())
        again = score(card["task"], pred, test["y"], meta["classes"])
    recorded = card["metrics"]["test"]
    for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "iou_macro"):
        assert again[key] == pytest.approx(recorded[key], abs=1e-9), key
    assert recorded["accuracy"] > 0.9  # breast cancer: majority class is ~0.63


def test_dvc_lock_lists_every_stage(flow_run):
    project, _ = flow_run
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    assert sorted(lock["stages"]) == sorted(STAGES)


def test_outputs_are_where_the_readme_says(flow_run):
    project, _ = flow_run
    metrics = yaml.safe_load((project / "data/evaluate/metrics.json").read_text())
    assert metrics["best_candidate"] in metrics["candidates"]
    for png in ("learning_curves.png", f"confusion_{metrics['best_candidate']}.png"):
        assert (project / "data/evaluate/plots" / png).stat().st_size > 1000
    assert "fnn-relu" in dvc(project, "metrics", "show")


def test_dvc_repro_reruns_nothing_then_only_what_a_train_param_touches(flow_run):
    project, _ = flow_run
    assert ran_stages(dvc(project, "repro")) == []

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["epochs"] = 3
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert ran_stages(dvc(project, "repro")) == ["train", "evaluate", "register"]
    assert (project / "data/registry/tabular-fnn/versions/v2/card.json").exists()
