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


def ds(modality: str = "table", **sections) -> dict:
    """A one-dataset params dict with some sections replaced."""
    base = {"modality": modality, "train": {"candidates": {"a": {"family": "fnn"}}}, "register": {"model_name": "m"}}
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value}
    return {"datasets": {"d": base}}


@pytest.mark.parametrize(
    "data, key, words",
    [
        (
            ds(train={"candidates": {"a": {"family": "fnn", "lr": -0.1}}}),
            "datasets.d.train.candidates.a.lr",
            "greater than 0",
        ),
        (
            ds(train={"candidates": {"a": {"family": "transformer"}}}),
            "datasets.d.train.candidates.a.family",
            "'fnn', 'cnn', 'lstm', 'gru'",
        ),
        (ds(train={"epoch": 3}), "datasets.d.train.epoch", "unknown key"),
        (ds(prepare={"val_fraction": 0.9}), "datasets.d.prepare.val_fraction", "less than 0.5"),
        (ds(register={"model_name": "../escape"}), "datasets.d.register.model_name", "pattern"),
        (
            ds(train={"candidates": {"a": {"family": "fnn", "activation": "gelu"}}}),
            "datasets.d.train.candidates.a.activation",
            "relu",
        ),
        (
            ds(train={"candidates": {"a": {"family": "lstm"}}}),
            "datasets.d.train.candidates.a.family",
            "lstm cannot learn from table data",
        ),
        (
            ds(train={"candidates": {"a": {"family": "cnn", "kernel_size": 4}}}, modality="image"),
            "datasets.d.train.candidates.a.kernel_size",
            "odd",
        ),
        (
            {**ds(train={"batch_size": 1}), "train": {"num_workers": 2}},  # explicit: `auto` may resolve to 1
            "datasets.d.train.batch_size",
            "at least train.num_workers",
        ),
        (
            ds(prepare={"window": 5, "season_length": 12}, modality="series"),
            "datasets.d.prepare.season_length",
            "12 must not exceed window (5)",
        ),
        ({"train": {"num_wokers": 3}}, "train.num_wokers", "unknown key"),
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
        [
            sys.executable,
            "-m",
            "pipelines.orchestration.flow",
            "--workdir",
            str(tmp_path),
            "-S",
            "datasets.tabular.train.candidates.fnn-relu.lr=-1",
        ],
        capture_output=True,
        text=True,
        env=project_env(),
        cwd=ROOT,
    )
    elapsed = time.perf_counter() - started
    assert proc.returncode == 2
    assert "datasets.tabular.train.candidates.fnn-relu.lr: Input should be greater than 0" in proc.stderr
    # Refused before Prefect, Ray or DVC started: only interpreter start-up and imports.
    assert elapsed < 15, elapsed
    assert (tmp_path / "params.yaml").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_validation_itself_takes_well_under_a_second():
    started = time.perf_counter()
    with pytest.raises(PipelineInputError):
        validate_params(ds(train={"candidates": {"x": {"family": "nope"}}}))
    assert time.perf_counter() - started < 1.0
