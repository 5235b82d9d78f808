"""Register through the real flow, run after run, as a user goes on after the default run (Prefect -> DVC -> registry).

One project, in the order a new user meets it: the default table, then the README's own-data example under
the same model name (refused before it trains, naming the setting), then under its own name, then the default
again (DVC restores every stage from its run cache but register, which finds the version it published), a
deleted registry (registered again), and a retrain compared with production on the same test split.
"""

import copy
import json
import shutil

import pytest
import yaml

from pipelines.config import PipelineParams
from pipelines.orchestration.failures import StageFailed
from pipelines.paths import DatasetPaths
from pipelines.registry.local import open_registry
from tests.conftest import copy_of, one_fnn_params

pytestmark = pytest.mark.slow
WHERE = DatasetPaths("tabular")


def with_changes(params: dict, **tabular: dict) -> PipelineParams:
    changed = copy.deepcopy(params)
    for section, values in tabular.items():
        changed["datasets"]["tabular"].setdefault(section, {}).update(values)
    return PipelineParams.model_validate(changed)


def registered(project) -> dict:
    return json.loads((project / WHERE.registered_file).read_text())


def test_register_run_after_run(tmp_path, first_tabular_run):
    from prefect.artifacts import Artifact

    from pipelines.orchestration.flow import training_pipeline

    params = one_fnn_params()
    # The default table's first run (conftest.first_tabular_run, the flow on a fresh copy with these params),
    # copied: this test goes on from it.
    first = first_tabular_run.result
    project = copy_of(first_tabular_run, tmp_path / "project")
    assert yaml.safe_load((project / "params.yaml").read_text()) == params
    registry = open_registry(project / "data" / "registry")

    def run(p: PipelineParams | None = None) -> dict:
        return training_pipeline(params=p, datasets=["tabular"], workdir=str(project))

    assert not any(s["skipped"] for s in first["stages"])  # it trained from scratch
    assert registered(project)["version"] == 1 and registry.aliases("tabular-fnn") == {"production": 1}
    v1 = registry.get_card("tabular-fnn", 1)
    assert v1["signature"]["task"] == "binary" and len(v1["signature"]["inputs"]) == 30
    trained = (project / WHERE.train_summary).read_bytes()

    # The README's own-data example, under the name the default run used: a regression model is another line.
    diabetes = {"source": "sklearn:diabetes", "label": "target"}
    with pytest.raises(StageFailed) as refused:
        run(with_changes(params, ingest=diabetes))
    assert refused.value.stage == "prepare@tabular" and refused.value.exit_code == 2
    assert "model name 'tabular-fnn' holds v1 of binary" in str(refused.value)
    assert "-S datasets.tabular.register.model_name=" in str(refused.value)
    assert registry.list_versions("tabular-fnn") == [1] and registry.list_models() == ["tabular-fnn"]
    assert (project / WHERE.train_summary).read_bytes() == trained  # refused before it trained

    # Under its own name it trains and registers; the classifier's line is untouched.
    run(with_changes(params, ingest=diabetes, register={"model_name": "diabetes-fnn"}))
    assert registry.get_card("diabetes-fnn", 1)["signature"]["task"] == "regression"
    assert registry.list_versions("tabular-fnn") == [1] and registry.aliases("tabular-fnn") == {"production": 1}

    # Back to the default params: DVC restores ingest..evaluate from its run cache, never register.
    again = run(PipelineParams.model_validate(params))
    register_stage = next(s for s in again["stages"] if s["stage"] == "register@tabular")
    assert not register_stage["skipped"]
    assert registered(project)["version"] == 1 and registered(project)["sha256"] == v1["sha256"]
    assert registry.list_versions("tabular-fnn") == [1]  # found, not published again

    # A deleted registry (or a teammate's empty one): DVC sees nothing changed, the flow registers again.
    shutil.rmtree(project / "data" / "registry")
    run()
    assert (
        registry.list_versions("tabular-fnn") == [1] and registry.get_card("tabular-fnn", 1)["sha256"] == v1["sha256"]
    )
    assert registry.aliases("tabular-fnn") == {"production": 1}

    # A retrain on the same data: the champion (production) is scored on this run's test split.
    run(with_changes(params, train={"seed": 7}))
    report = yaml.safe_load((project / WHERE.metrics_file).read_text())
    champion = report["champion"]
    assert champion["version"] == 1 and champion["comparable"]
    assert champion["test/accuracy"] == pytest.approx(
        v1["metrics"]["test/accuracy"], abs=1e-6
    )  # same split, same model
    comparison = (project / WHERE.plots_dir / "comparison.md").read_text()
    assert "| champion: v1 (production) |" in comparison, comparison
    artifact = Artifact.get("tabular-metrics")
    rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    assert [r["candidate"] for r in rows if r["family"] == "champion"] == ["champion: v1 (production)"]
    v2 = registry.get_card("tabular-fnn", 2)
    assert v2["champion"]["version"] == 1
    assert "on the same test split" in registered(project)["promotion"], registered(project)
    assert first["datasets"]["tabular"]["registered"]["version"] == 1
