"""The main job through its front door with 2 Ray workers (DDP): what `make run ARGS="--dataset digits -S
train.num_workers=2"` runs, on a copy of the project with its default digits params."""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest
import yaml

from pipelines.config import RegisterParams
from pipelines.paths import DatasetPaths
from tests.conftest import BIN, copy_project, project_env
from tests.rank_helpers import assert_ranks_in_step, train_rows
from tests.test_run_lifecycle import flow_command, flow_env

pytestmark = pytest.mark.slow


def test_digits_with_two_workers_trains_ranks_in_step_and_registers_a_good_model(tmp_path, prefect_api):
    project = copy_project(tmp_path / "project")  # the repo's own params.yaml
    started = time.perf_counter()
    proc = subprocess.run(
        [*flow_command(project), "--dataset", "digits", "-S", "train.num_workers=2"],
        capture_output=True,
        text=True,
        env=flow_env(shared_api=True),
        timeout=900,
    )
    seconds = time.perf_counter() - started
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]

    where = DatasetPaths("digits")
    summary = json.loads((project / where.train_summary).read_text())
    assert summary["scaling"]["num_workers"] == 2 and not summary["scaling"]["in_process"], summary["scaling"]
    assert "one worker group of 2 worker(s)" in output, output[-4000:]
    assert {c["status"] for c in summary["candidates"].values()} == {"finished"}
    assert_ranks_in_step(summary, train_rows(project / where.split_dir("train")))
    assert len({w["node_id"] for c in summary["candidates"].values() for w in c["workers"]}) == 1  # one Ray node

    registered = json.loads(
        (project / RegisterParams().registry / "digits-cnn" / "versions" / "v1" / "card.json").read_text()
    )
    assert registered["metrics"]["test/accuracy"] >= 0.97, registered["metrics"]
    val = {name: c["val_metrics"]["val/accuracy"] for name, c in summary["candidates"].items()}
    # shown with -s (timings belong in benchmarks, not in asserts)
    print(f"2-worker digits run: {seconds:.0f} s, val accuracy {val}, test {registered['metrics']['test/accuracy']}")

    # The other front door agrees: params.yaml holds the override, so `dvc repro` finds nothing to redo.
    assert yaml.safe_load((project / "params.yaml").read_text())["train"]["num_workers"] == 2
    repro = subprocess.run(
        [str(BIN / "dvc"), "repro", "--glob", "*@digits"],
        cwd=project,
        capture_output=True,
        text=True,
        env=project_env(),
    )
    assert repro.returncode == 0, repro.stdout + repro.stderr
    assert re.findall(r"Running stage '([^']+)'", repro.stdout + repro.stderr) == []
