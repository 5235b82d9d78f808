"""A run from the command line when the DVC remote or the S3 registry is down (a moto server started, then stopped;
a remote under a regular file): what is retried, what goes on, the exit code and the last line.

One training serves every case (the session's first run of the default table, conftest.first_tabular_run, which
other tests go on from too); the runs here only pull, skip, register or push.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from s3_server import CREDENTIALS, start_server

from tests.conftest import BIN, copy_of, point_local_remote, run
from tests.test_run_lifecycle import flow_command, flow_env

pytestmark = pytest.mark.slow
RETRIED = 2  # the flow's tasks: one attempt and, here, 1 retry (DL_PIPELINE_RETRIES; 3 by default)


def run_flow(project: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(flow_command(project), capture_output=True, text=True, env=env, timeout=900)


def last_line(proc: subprocess.CompletedProcess) -> str:
    return proc.stderr.strip().splitlines()[-1]


def final_state():
    """The final state of the newest flow run on the test's Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)[0].state


def test_a_remote_or_registry_that_is_down_is_retried_named_and_exits_75(tmp_path, first_tabular_run):
    from prefect.settings import PREFECT_API_URL

    with start_server(bucket="gone") as server:
        dead = server.endpoint  # stopped below: nothing answers on its port
    # A copy of the session's first run of the default table (conftest.first_tabular_run): its model is trained and
    # registered, its outputs recorded in dvc.lock; the runs below pull, skip, register or push.
    project = copy_of(first_tabular_run, tmp_path / "p")
    env = {
        **flow_env(),
        **CREDENTIALS,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "AWS_ENDPOINT_URL": dead,
        "AWS_MAX_ATTEMPTS": "2",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "DL_REGISTRY_CACHE": str(tmp_path / "cache"),
        "DL_PIPELINE_RETRIES": str(RETRIED - 1),
    }
    dvc = str(BIN / "dvc")

    # 1. The run succeeds, the push cannot: the remote's directory would be under a regular file.
    (tmp_path / "a-file").write_text("not a directory\n")
    point_local_remote(project, tmp_path / "a-file" / "remote")
    proc = run_flow(project, env)
    assert proc.returncode == 75, proc.stderr[-3000:]
    line = last_line(proc)
    assert re.fullmatch(
        rf"error: not pushed: dvc push to remote 'local' \({re.escape(str(tmp_path))}/a-file/remote\) failed after "
        rf"{RETRIED} attempts: .+; run `dvc push` when the remote is back",
        line,
    ), line
    assert "Done." in proc.stdout and "tabular-fnn v1" in proc.stdout, proc.stdout  # the run's summary first
    assert "Models: data/registry" in proc.stdout  # params.yaml's register.registry
    state = final_state()
    assert state.is_failed() and state.message == line[len("error: ") :]

    # 2. The remote is S3 on the stopped server. The pull fails, but every output the run needs is here: a warning,
    # and the run goes on (nothing re-runs). The push fails again: exit 75, the line names the endpoint.
    run(project, dvc, "remote", "add", "--local", "-d", "storage", "s3://gone/dvc", env=env)
    proc = run_flow(project, env)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 75, output[-3000:]
    assert "every output these stages recorded is here, so the run goes on without the remote" in output
    assert "Running stage" not in output
    assert last_line(proc).startswith("error: not pushed: dvc push to remote 'storage' (s3://gone/dvc)")
    assert dead in last_line(proc)

    # 3. The registry is on the stopped server (the remote answers again): register fails with exit 75, is
    # retried, and the last line names the endpoint and the operation.
    run(project, dvc, "remote", "remove", "--local", "storage", env=env)
    point_local_remote(project, tmp_path / "remote")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["register"]["registry"] = "s3://gone/models"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = run_flow(project, env)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 75, output[-3000:]
    assert output.count("Running stage 'register@tabular'") == RETRIED, output[-3000:]
    assert re.fullmatch(
        rf"error: stage 'register@tabular' failed \(exit 75\): S3 endpoint {re.escape(dead)} did not answer "
        r"\((ListObjectsV2|PutObject) s3://gone/models/\S+\) after 2 attempts in \d+ s "
        r"\(temporary: trying again may work\)",
        last_line(proc),
    ), last_line(proc)
    assert "EndpointConnectionError" not in output  # botocore's traceback stays out of the stage's output

    # 4. Outputs the run needs are neither here nor reachable (the remote is down): exit 75, naming the remote.
    run(project, dvc, "remote", "add", "--local", "-d", "storage", "s3://gone/dvc", env=env)
    shutil.rmtree(project / "data/train/tabular")
    shutil.rmtree(project / ".dvc/cache")
    proc = run_flow(project, env)
    assert proc.returncode == 75, proc.stderr[-3000:]
    assert re.fullmatch(
        rf"error: dvc pull from remote 'storage' \(s3://gone/dvc\) failed after {RETRIED} attempts: .*"
        rf"{re.escape(dead)}.* \(temporary: trying again may work\)",
        last_line(proc),
    ), last_line(proc)
