"""Outages are retried and named: an S3 endpoint that does not answer (the registry, an ingest source), a DVC remote
that fails, and the root-cause line of exceptions whose names end in neither Error nor Exception.

Real components only: a moto S3 server started and then stopped (its port no longer answers), real DVC repos,
real Python processes' tracebacks.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from s3_server import CREDENTIALS, moto_s3, s3_env, start_server  # noqa: F401  (fixtures)

from pipelines.errors import SourceUnavailable, Unavailable
from pipelines.modalities.sources import fetched
from pipelines.orchestration.dvc_ops import outputs_here
from pipelines.orchestration.failures import remote_failure, root_cause
from pipelines.registry.local import open_registry
from tests.conftest import BIN, ROOT, project_env, run

ATTEMPTS = 2  # AWS_MAX_ATTEMPTS for these tests: botocore's backoff stays well under a second


@pytest.fixture(scope="module")
def dead_endpoint() -> str:
    """The URL of a moto S3 server that was started, then stopped: nothing answers on its port any more."""
    with start_server(bucket="gone") as server:
        endpoint = server.endpoint
    return endpoint


@pytest.fixture
def dead_s3(dead_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    for var, value in {
        **CREDENTIALS,
        "AWS_ENDPOINT_URL": dead_endpoint,
        "AWS_MAX_ATTEMPTS": str(ATTEMPTS),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "DL_REGISTRY_CACHE": str(tmp_path / "cache"),
    }.items():
        monkeypatch.setenv(var, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    yield dead_endpoint


def one_line(endpoint: str, operation: str, target: str) -> str:
    call = rf"\({operation} {re.escape(target)}\S*\)"
    return rf"^S3 endpoint {re.escape(endpoint)} did not answer {call} after {ATTEMPTS} attempts in \d+ s$"


def test_the_registry_on_an_endpoint_that_does_not_answer_is_unavailable_in_one_line(dead_s3, tmp_path):
    (tmp_path / "model.pt").write_bytes(b"weights")
    registry = open_registry("s3://gone/models")
    started = time.monotonic()
    with pytest.raises(Unavailable) as raised:
        registry.register("m", tmp_path / "model.pt", {"metrics": {}})
    assert re.match(one_line(dead_s3, "PutObject", "s3://gone/models/.registry-probe/"), str(raised.value))
    with pytest.raises(Unavailable, match=one_line(dead_s3, "GetObject", "s3://gone/models/m/versions/v3/card.json")):
        registry.get("m", 3)
    assert time.monotonic() - started < 15  # bounded: a short connect timeout and a few attempts, not botocore's 27 s


def test_the_registry_command_line_exits_75_with_one_line(dead_s3, tmp_path):
    proc = subprocess.run(
        [str(BIN / "python"), "-m", "pipelines.registry.cli", "list", "--registry", "s3://gone/models"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**project_env(), "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert proc.returncode == 75, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    line = proc.stderr.strip()
    assert line.startswith("error: ") and line.endswith(" (temporary: trying again may work)")
    cause = line[len("error: ") : -len(" (temporary: trying again may work)")]
    assert re.match(one_line(dead_s3, "ListObjectsV2", "s3://gone/models"), cause), cause


def test_an_s3_source_on_an_endpoint_that_does_not_answer_is_unavailable(dead_s3):
    with pytest.raises(SourceUnavailable) as raised, fetched("s3://gone/tables/mine.csv"):
        pass
    assert re.match(
        "ingest.source: " + one_line(dead_s3, "HeadObject", "s3://gone/tables/mine.csv")[1:], str(raised.value)
    )


def test_the_registry_command_line_uses_register_registry_of_params_yaml(s3_env, tmp_path):
    env = {**project_env(), "PYTHONPATH": str(ROOT)}
    listing = [str(BIN / "python"), "-m", "pipelines.registry.cli", "list"]
    assert run(tmp_path, *listing, env=env).strip() == "no models in data/registry"  # no params.yaml here
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"register": {"registry": s3_env}}))
    assert run(tmp_path, *listing, env=env).strip() == f"no models in {s3_env}"
    assert run(tmp_path, *listing, "--registry", "elsewhere", env=env).strip() == "no models in elsewhere"


# -- the root-cause line, on tracebacks real processes printed ----------------------------------------------------


def traceback_of(code: str, env: dict[str, str] | None = None) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1 and "Traceback (most recent call last):" in proc.stderr, proc.stderr
    return proc.stderr.splitlines()


def test_the_root_cause_names_an_exception_whatever_its_class_is_called(moto_s3, tmp_path):
    bad_zip = traceback_of("import io, zipfile; zipfile.ZipFile(io.BytesIO(b'not a zip file'))")
    assert root_cause(["train[x]: epoch 1", *bad_zip]) == "zipfile.BadZipFile: File is not a zip file"

    env = {**project_env(), **moto_s3.env(), "AWS_CONFIG_FILE": str(tmp_path / "none")}
    no_bucket = traceback_of("import boto3; boto3.client('s3').list_objects_v2(Bucket='no-such-bucket')", env)
    assert root_cause(no_bucket) == (
        "botocore.errorfactory.NoSuchBucket: An error occurred (NoSuchBucket) when calling the ListObjectsV2 "
        "operation: The specified bucket does not exist"
    )
    # Ray prefixes each line of a worker's output with its name; a chain ends with its wrappers.
    chained = traceback_of(
        "import io, subprocess, zipfile\n"
        "try:\n    zipfile.ZipFile(io.BytesIO(b'x'))\n"
        "except zipfile.BadZipFile as err:\n    raise subprocess.CalledProcessError(1, 'train') from err"
    )
    assert root_cause([f"(RayTrainWorker pid=7) {line}" for line in chained]) == (
        "zipfile.BadZipFile: File is not a zip file"
    )


def test_ordinary_log_lines_are_not_taken_for_exceptions():
    lines = [
        "Running stage 'train@digits':",
        "Note: the data has 3 columns",
        "Epoch 3: loss 0.12",
        "Done",
        "train[digits]: cnn-narrow trained",
    ]
    assert root_cause(lines) is None


# -- the DVC remote ---------------------------------------------------------------------------------------------


def dvc_project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A git + DVC repo with one stage (`echo ... > out.txt`), run once."""
    env = project_env()
    project = tmp_path / "p"
    project.mkdir()
    run(project, "git", "init", "-q", env=env)
    run(project, str(BIN / "dvc"), "init", "-q", env=env)
    run(project, str(BIN / "dvc"), "stage", "add", "-q", "-n", "make", "-o", "out.txt", "echo made > out.txt", env=env)
    run(project, str(BIN / "dvc"), "repro", "-q", env=env)
    return project, env


def test_recorded_outputs_in_the_workspace_or_the_cache_need_no_pull(tmp_path):
    project, _ = dvc_project(tmp_path)
    assert outputs_here(project, ["make"])
    (project / "out.txt").unlink()
    assert outputs_here(project, ["make"])  # DVC's cache can check it out
    for obj in (project / ".dvc/cache").rglob("*"):
        if obj.is_file():
            obj.unlink()
    assert not outputs_here(project, ["make"])


def test_a_failed_push_is_named_by_the_remote_and_dvcs_error_not_its_support_banner(tmp_path):
    project, env = dvc_project(tmp_path)
    (tmp_path / "a-file").write_text("a remote cannot live under a regular file\n")
    url = str(tmp_path / "a-file" / "remote")
    run(project, str(BIN / "dvc"), "remote", "add", "-d", "broken", url, env=env)
    proc = subprocess.run([str(BIN / "dvc"), "push"], cwd=project, env=env, capture_output=True, text=True)
    assert proc.returncode != 0 and "dvc.org/support" in proc.stdout + proc.stderr
    err = remote_failure("push", "broken", url, 4, proc.stdout + proc.stderr)
    assert isinstance(err, Unavailable)
    assert re.match(
        rf"dvc push to remote 'broken' \({re.escape(url)}\) failed after 4 attempts: .*Not a directory", str(err)
    ), str(err)
