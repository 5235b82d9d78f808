import subprocess
import sys
import time

import pytest
import yaml

from pipelines.config import PipelineParams, load_params, validate_params
from pipelines.errors import PipelineInputError
from tests.conftest import ROOT, project_env


def test_repo_params_yaml_is_valid_and_matches_the_schema_defaults():
    assert load_params(ROOT / "params.yaml") == PipelineParams()


@pytest.mark.parametrize(
    "data, key, words",
    [
        ({"train": {"candidates": {"a": {"lr": -0.1}}}}, "train.candidates.a.lr", "greater than 0"),
        ({"train": {"candidates": {"a": {"family": "transformer"}}}}, "train.candidates.a.family", "fnn"),
        ({"train": {"epoch": 3}}, "train.epoch", "unknown key"),
        ({"prepare": {"val_fraction": 0.9}}, "prepare.val_fraction", "less than 0.5"),
        ({"register": {"model_name": "../escape"}}, "register.model_name", "pattern"),
        ({"train": {"candidates": {"a": {"activation": "gelu"}}}}, "train.candidates.a.activation", "relu"),
    ],
)
def test_bad_values_are_refused_naming_the_key(data, key, words):
    with pytest.raises(PipelineInputError) as err:
        validate_params(data, "params.yaml")
    assert f"params.yaml: {key}:" in str(err.value)
    assert words in str(err.value)


def test_params_file_problems_name_the_file(tmp_path):
    with pytest.raises(PipelineInputError, match="file not found"):
        load_params(tmp_path / "missing.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(PipelineInputError, match=r"params.yaml: not valid YAML"):
        load_params(bad)


def test_flow_cli_refuses_a_bad_override_fast_and_writes_nothing(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PipelineParams().model_dump(mode="json")))
    before = (tmp_path / "params.yaml").read_text()
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.flow", "--workdir", str(tmp_path), "-S", "train.candidates.fnn-relu.lr=-1"],
        capture_output=True, text=True, env=project_env(), cwd=ROOT,
    )
    elapsed = time.perf_counter() - started
    assert proc.returncode == 2
    assert "train.candidates.fnn-relu.lr: Input should be greater than 0" in proc.stderr
    # Refused before Prefect, Ray or DVC started: only interpreter start-up and imports.
    assert elapsed < 15, elapsed
    assert (tmp_path / "params.yaml").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_validation_itself_takes_well_under_a_second():
    started = time.perf_counter()
    with pytest.raises(PipelineInputError):
        validate_params({"train": {"candidates": {"x": {"family": "nope"}}}})
    assert time.perf_counter() - started < 1.0
