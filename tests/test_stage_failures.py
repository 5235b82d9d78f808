"""What a failed run tells the user: the failing stage's exit code and, last, the line that names the root cause;
and the checks that refuse a bad run before anything starts."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from pipelines.config import PipelineParams
from pipelines.errors import PipelineInputError
from pipelines.orchestration.failures import root_cause, stage_failure
from pipelines.orchestration.preflight import check_model_lines, check_sources
from tests.conftest import ROOT, project_env

# What `dvc repro train@digits` printed when the checkpoint storage was full (shortened): the cause
# sits in a worker's traceback, behind Ray's retries and the driver's wrappers.
FULL_DISK = """\
train[digits]: cnn-narrow (cnn) on 2 worker(s), Ray run digits-cnn-narrow-1a2b3c4d5e
(RayTrainWorker pid=4242) Traceback (most recent call last):
(RayTrainWorker pid=4242)   File "/x/ray/train/_internal/storage.py", line 210, in persist_current_checkpoint
(RayTrainWorker pid=4242)     shutil.copytree(src, dst)
(RayTrainWorker pid=4242) OSError: [Errno 28] No space left on device
Retrying the training (attempt 2 of 3)
(RayTrainWorker pid=4301) OSError: [Errno 28] No space left on device
Traceback (most recent call last):
  File "/x/pipelines/stages/train.py", line 280, in <module>
ray.train.v2.api.exceptions.WorkerGroupError: Training failed due to worker errors:
[Rank 0 Error Snippet]:
ray.exceptions.RayTaskError(OSError): ray::RayTrainWorker.run_train_fn()
ERROR: failed to reproduce 'train@digits': failed to run: python -m pipelines.stages.train digits, exited with 1
"""


def test_the_last_line_of_a_failed_stage_names_the_root_cause():
    err = stage_failure("train@digits", 255, FULL_DISK.splitlines())
    assert str(err).splitlines()[-1] == (
        "stage 'train@digits' failed (exit 1): OSError: [Errno 28] No space left on device"
    )
    assert err.exit_code == 1 and not err.transient


def test_a_stages_own_error_line_wins_and_its_exit_code_is_kept():
    output = [
        "Running stage 'ingest@mine':",
        "> python -m pipelines.stages.ingest mine",
        "Traceback (most recent call last):",
        "ValueError: something deeper",
        "error: ingest.source: data/mine.csv: label column 'target' not found; columns are a, b",
        "ERROR: failed to reproduce 'ingest@mine': failed to run: python -m pipelines.stages.ingest mine, "
        "exited with 2",
    ]
    err = stage_failure("ingest@mine", 255, output)
    assert str(err).splitlines()[-1] == (
        "stage 'ingest@mine' failed (exit 2): ingest.source: data/mine.csv: label column 'target' not found; "
        "columns are a, b"
    )
    assert err.exit_code == 2 and not err.transient


def test_no_exception_line_falls_back_to_dvcs_error():
    assert root_cause(["some output", "more"]) is None
    err = stage_failure("prepare@x", 1, ["ERROR: failed to reproduce 'prepare@x': killed"])
    assert (
        str(err).splitlines()[-1] == "stage 'prepare@x' failed (exit 1): ERROR: failed to reproduce 'prepare@x': killed"
    )


def _params(source: str) -> PipelineParams:
    data = PipelineParams().model_dump(mode="json")
    data["datasets"]["tabular"]["ingest"]["source"] = source
    return PipelineParams.model_validate(data)


def test_a_missing_or_empty_local_source_is_refused_before_anything_starts(tmp_path):
    with pytest.raises(PipelineInputError, match=r"datasets.tabular.ingest.source: data/nope.csv: file does not exist"):
        check_sources(_params("data/nope.csv"), ["tabular"], tmp_path)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(PipelineInputError, match="empty.csv: the file is empty"):
        check_sources(_params(str(tmp_path / "empty.csv")), ["tabular"], tmp_path)
    check_sources(_params("data/nope.csv"), ["digits"], tmp_path)  # not a dataset of this run
    check_sources(_params("s3://bucket/key.csv"), ["tabular"], tmp_path)  # remote: the ingest stage's to check
    (tmp_path / "ok.csv").write_text("a,target\n1,2\n")
    check_sources(_params("ok.csv"), ["tabular"], tmp_path)


def test_a_model_name_holding_another_kind_of_model_than_the_params_state_is_refused_before_anything_starts(
    tmp_path,
):
    from pipelines.registry.local import LocalModelRegistry
    from pipelines.registry.model_line import ModelLineMismatch

    registry = LocalModelRegistry(tmp_path / "data" / "registry")
    (tmp_path / "model.pt").write_bytes(b"weights")
    held = {"modality": "table", "task": "binary", "input_shape": [30], "classes": [0, 1], "inputs": []}
    registry.register("tabular-fnn", tmp_path / "model.pt", {"signature": held})
    check_model_lines(_params("sklearn:diabetes"), ["tabular"], tmp_path)  # task auto: known at prepare
    data = PipelineParams().model_dump(mode="json")
    data["datasets"]["tabular"]["ingest"]["task"] = "regression"
    with pytest.raises(
        ModelLineMismatch,
        match=r"model name 'tabular-fnn' holds v1 of binary on a table of 0 .*"
        r"this run would register regression on tables: set datasets.tabular.register.model_name",
    ):
        check_model_lines(PipelineParams.model_validate(data), ["tabular"], tmp_path)
    data["datasets"]["tabular"]["register"]["model_name"] = "houses-fnn"
    check_model_lines(PipelineParams.model_validate(data), ["tabular"], tmp_path)


def test_the_command_line_refuses_a_missing_source_with_exit_2_and_without_importing_prefect(tmp_path):
    data = PipelineParams().model_dump(mode="json")
    data["datasets"]["tabular"]["ingest"]["source"] = "missing.csv"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    code = (
        "import sys; from pipelines.orchestration.cli import main; rc = main(['--workdir', sys.argv[1]]); "
        "print('prefect' in sys.modules, 'torch' in sys.modules, 'ray' in sys.modules); sys.exit(rc)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=project_env(), cwd=ROOT
    )
    assert proc.returncode == 2, proc.stderr
    assert "datasets.tabular.ingest.source: missing.csv: file does not exist" in proc.stderr
    assert proc.stdout.split() == ["False", "False", "False"]
