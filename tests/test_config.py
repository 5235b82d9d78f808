import subprocess
import sys

import pytest
import yaml

from pipelines.config import PipelineParams, load_params, validate_params
from pipelines.errors import PipelineInputError
from tests.conftest import ROOT, project_env


def test_repo_params_yaml_is_valid_and_matches_the_schema_defaults():
    assert load_params(ROOT / "params.yaml") == PipelineParams()
    # and in the canonical form the flow writes, so a run that passes the defaults leaves it unchanged
    assert (ROOT / "params.yaml").read_text() == PipelineParams().to_yaml()


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
    assert proc.returncode == 2
    assert "datasets.tabular.train.candidates.fnn-relu.lr: Input should be greater than 0" in proc.stderr
    # Refused before Prefect, Ray or DVC started: they would have left their files in the workdir.
    # (How long it takes is the benchmark's business, not a test's.)
    assert (tmp_path / "params.yaml").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_validation_loads_no_framework():
    """Validating params imports neither torch, Ray, Lightning nor Prefect: what keeps a refusal quick."""
    code = (
        "import sys\n"
        "from pipelines.config import validate_params\n"
        "from pipelines.errors import PipelineInputError\n"
        f"data = {ds(train={'candidates': {'x': {'family': 'nope'}}})!r}\n"
        "try:\n"
        "    validate_params(data)\n"
        "except PipelineInputError as err:\n"
        "    print(err)\n"
        "print(sorted(m for m in ('torch', 'ray', 'lightning', 'pytorch_lightning', 'prefect') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=project_env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "datasets.d.train.candidates.x.family: Input tag 'nope'" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_each_dataset_lists_only_the_keys_of_its_modality():
    params = validate_params(ds(modality="series", prepare={"window": 20, "season_length": 4}))
    assert params.datasets["d"].prepare.window == 20
    assert params.datasets["d"].ingest.source == "statsmodels:sunspots"  # the modality's own default
    assert not hasattr(params.datasets["d"].prepare, "context_length")
    assert "window" not in validate_params(ds()).model_dump()["datasets"]["d"]["prepare"]
    with pytest.raises(PipelineInputError) as err:
        validate_params(ds(prepare={"window": 20}, ingest={"column": "v"}), "params.yaml")
    assert "params.yaml: datasets.d.prepare.window: unknown key for table data" in str(err.value)
    assert "params.yaml: datasets.d.ingest.column: unknown key for table data" in str(err.value)


def test_overrides_reach_every_modalitys_keys_and_are_checked():
    from pipelines.orchestration.overrides import parse_overrides

    base = PipelineParams().model_dump(mode="json")
    changed = validate_params(
        parse_overrides(["datasets.series.prepare.window=20", "datasets.text.prepare.max_vocab=500"], base)
    )
    assert changed.datasets["series"].prepare.window == 20 and changed.datasets["text"].prepare.max_vocab == 500
    with pytest.raises(PipelineInputError, match=r"-S override: datasets.digits.prepare.window: unknown key"):
        validate_params(parse_overrides(["datasets.digits.prepare.window=20"], base), "-S override")


def test_the_prefect_servers_schema_check_takes_the_defaults_and_names_a_bad_key():
    """What the Prefect API checks before it starts a run from the form (JSON schema, no server needed)."""
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools import ValidationError, validate

    from pipelines.orchestration.flow import training_pipeline

    schema = parameter_schema(training_pipeline.fn).model_dump_for_openapi()
    params = PipelineParams().model_dump(mode="json")
    validate({"params": params}, schema, raise_on_error=True, preprocess=True, ignore_required=True)
    params["datasets"]["series"]["train"]["epochs"] = 0
    with pytest.raises(ValidationError, match=r"field 'params.datasets.series.train.epochs'"):
        validate({"params": params}, schema, raise_on_error=True, preprocess=True, ignore_required=True)


def test_two_datasets_registering_under_one_model_name_are_refused_naming_both():
    data = PipelineParams().model_dump(mode="json")
    data["datasets"]["digits"]["register"]["model_name"] = data["datasets"]["tabular"]["register"]["model_name"]
    with pytest.raises(
        PipelineInputError,
        match=r"datasets.tabular.register.model_name and datasets.digits.register"
        r".model_name are both 'tabular-fnn': each dataset registers under a model name of its own",
    ):
        validate_params(data, "params.yaml")
