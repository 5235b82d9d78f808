"""A sweep as the README runs it: `dvc exp run --queue` with two values of a training param,
`dvc queue start`, then `dvc exp show --json` and `python -m pipelines.orchestration.experiments compare`.

Queued experiments run in DVC's temporary workspaces (.dvc/tmp/exps/tmp*): real stages, a
real Ray instance each, one after the other. The baseline commit is run first, so the
experiments reuse its ingest/prepare outputs from the cache and only train onwards runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from pipelines import workspace
from pipelines.orchestration.experiments import show_json
from tests.conftest import BIN, copy_project, project_env, run, small_params

pytestmark = pytest.mark.slow
LR_KEY = "datasets.tabular.train.candidates.fnn-relu.lr"
LRS = (0.0003, 0.003)
METRICS = "data/evaluate/tabular/metrics.json"
GIT = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]


def experiments_of_head(show: list[dict]) -> list[dict]:
    """The experiments under the baseline commit in `dvc exp show --json`
    (DVC 3.67: [ExpState], each with ExpRanges)."""
    (baseline,) = [entry for entry in show if entry["rev"] != "workspace"]
    return baseline["experiments"] or []


def lr_of(exp: dict) -> float:
    return exp["revs"][0]["data"]["params"]["params.yaml"]["data"]["datasets"]["tabular"]["train"]["candidates"][
        "fnn-relu"
    ]["lr"]


def run_compare(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "python"), "-m", "pipelines.orchestration.experiments", "compare", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def wait_until_finished(project: Path, count: int, timeout: float) -> list[dict]:
    """Poll `dvc exp show --json` until `count` experiments are no longer queued or running."""
    deadline = time.monotonic() + timeout
    while True:
        exps = experiments_of_head(show_json(project))
        states = {exp["name"]: (exp["executor"] or {}).get("state", "success") for exp in exps}
        if len(exps) == count and all(state in ("success", "failed") for state in states.values()):
            return exps
        assert time.monotonic() < deadline, f"experiments not finished after {timeout:.0f}s: {states}"
        time.sleep(4)  # each `dvc exp show` costs a second or two of CPU on a 2-core machine


def live_workers(project: Path) -> list[int]:
    """Process groups of this project's queue workers that are still running (from dvc-task's records)."""
    groups = []
    for info in (project / ".dvc/tmp/exps/celery").glob("dvc-exp-worker-*.json"):
        record = json.loads(info.read_text())
        with contextlib.suppress(ProcessLookupError):
            if record.get("returncode") is None and (pgid := os.getpgid(record["pid"])) != os.getpgrp():
                groups.append(pgid)
    return groups


@contextlib.contextmanager
def queue_worker(project: Path, env: dict[str, str], log: Path):
    """`dvc queue start --jobs 1`; on the way out stop the worker and what it runs, also on failure.

    The worker is a daemon in its own process group, with the experiment it runs (`dvc exp
    exec-run`, the stage, the stage's Ray instance) in that group. An empty queue stops it
    by itself; otherwise `dvc queue stop --kill` is not enough: the worker runs one task at a
    time and answers no control message while it does, so the group is stopped directly.
    """
    with open(log, "w") as out:  # not a pipe: the daemon would inherit it and `queue start` return only when it exits
        started = subprocess.run(
            [str(BIN / "dvc"), "queue", "start", "--jobs", "1"],
            cwd=project,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=120,
        )
    assert started.returncode == 0, log.read_text()
    try:
        yield
        deadline = time.monotonic() + 60
        while live_workers(project) and time.monotonic() < deadline:
            time.sleep(1)  # the queue is empty: the worker stops and cleans up by itself in a few seconds
    finally:
        if live_workers(project):
            subprocess.run(
                [str(BIN / "dvc"), "queue", "stop", "--kill"], cwd=project, env=env, capture_output=True, timeout=60
            )
            for pgid in live_workers(project):
                workspace.stop_process_group(pgid, grace_seconds=5)


def test_a_queued_sweep_runs_is_shown_and_compared(tmp_path):
    env, dvc = project_env(), str(BIN / "dvc")
    params = small_params(("tabular",), epochs=2)
    candidates = params["datasets"]["tabular"]["train"]["candidates"]
    params["datasets"]["tabular"]["train"]["candidates"] = {
        "fnn-relu": candidates["fnn-relu"]
    }  # one candidate: half the time
    project = copy_project(tmp_path / "p", params)
    # The baseline the experiments are based on: the data, ingested and prepared (each experiment trains).
    run(project, dvc, "repro", "prepare@tabular", env=env)
    run(project, *GIT, "add", "-A", env=env)
    run(project, *GIT, "commit", "-qm", "baseline run", env=env)

    # Nothing to compare yet: a clear error, not an empty plot.
    out = project / "sweep.png"
    proc = run_compare(project, env, "--out", str(out))
    assert proc.returncode == 2 and "no finished experiments" in proc.stderr and not out.exists()

    run(project, dvc, "exp", "run", "register@tabular", "--queue", "-S", f"{LR_KEY}={LRS[0]},{LRS[1]}", env=env)
    with queue_worker(project, env, tmp_path / "queue-start.log"):
        exps = wait_until_finished(project, count=2, timeout=600)

    failed = [exp["name"] for exp in exps if (exp["executor"] or {}).get("state") == "failed"]
    assert not failed, "\n".join(run(project, dvc, "queue", "logs", name, env=env)[-3000:] for name in failed)
    results = {lr_of(exp): exp["revs"][0]["data"]["metrics"][METRICS]["data"] for exp in exps}
    assert sorted(results) == sorted(LRS)
    assert all(isinstance(metrics["best"]["test/accuracy"], float) for metrics in results.values())
    assert results[LRS[0]] != results[LRS[1]]  # each trained with its own lr

    # The experiments ran in their own workspaces: this one is as the baseline left it (nothing trained here).
    assert not (project / METRICS).exists() and not (project / "data/train/tabular").exists()
    assert run(project, "git", "status", "--porcelain", env=env) == ""
    assert not list((project / ".dvc/tmp/exps").glob("tmp*")), "an experiment workspace was left behind"
    assert workspace.holder(project) is None

    proc = run_compare(project, env, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    for exp in exps:  # one line each: its name, its lr, its test accuracy
        line = next(line for line in proc.stdout.splitlines() if line.startswith(exp["name"] + " "))
        assert f"{lr_of(exp):.4f}" in line and f"{results[lr_of(exp)]['best']['test/accuracy']:.4f}" in line, (
            proc.stdout
        )
    assert "fnn-relu.lr" in proc.stdout and "tabular: best.test/accuracy" in proc.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000

    proc = run_compare(project, env, "--metric", "best.nope", "--out", str(tmp_path / "nope.png"))
    assert proc.returncode == 2 and "best.nope" in proc.stderr and "best.test/f1_macro" in proc.stderr


def test_show_retries_only_the_queue_workspace_race():
    """`dvc exp show` during a queue can catch a temp workspace half removed (seen in CI); other errors fail at once."""
    from pipelines.orchestration.experiments import QUEUE_WORKSPACE_RACE

    seen = "ERROR: failed to show experiments - directory '/tmp/p/.dvc/tmp/exps/tmps1k39zpd/.dvc' does not exist"
    assert QUEUE_WORKSPACE_RACE.search(seen)
    assert not QUEUE_WORKSPACE_RACE.search("ERROR: failed to show experiments - not a git repository")
    assert not QUEUE_WORKSPACE_RACE.search("ERROR: '/tmp/p/params.yaml' does not exist")
