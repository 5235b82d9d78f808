"""A flow run's life from the command line: one Ray instance for the whole run, nothing left behind
(also after a failed run), and Ctrl-C / SIGTERM stop it within seconds, after which the same command resumes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import BIN, ROOT, copy_project, project_env, small_params

pytestmark = pytest.mark.slow
RAY_LINE = re.compile(r"Ray for this run: (\S+) \(ray start pid (\d+), (\S+)\)")


def one_candidate_params(datasets: dict[str, str], num_workers: int | str = 1, **train) -> dict:
    """Tables only (fast), one FNN candidate each: dataset name -> its source.

    num_workers 1: a Ray Train worker group on the run's Ray instance; "auto" (the default params'):
    on this CPU-only machine, Ray Train's local mode in the train stage's own process, and no Ray instance.
    """
    params = small_params(("tabular",), **train)
    params["train"]["num_workers"] = num_workers
    base = params["datasets"].pop("tabular")
    base["train"]["candidates"] = {"fnn": dict(next(iter(base["train"]["candidates"].values())))}
    for name, source in datasets.items():
        ds = json.loads(json.dumps(base))
        ds["ingest"]["source"] = source
        ds["register"]["model_name"] = f"{name}-fnn"
        params["datasets"][name] = ds
    return params


def flow_command(project: Path) -> list[str]:
    return [str(BIN / "python"), "-m", "pipelines.orchestration.flow", "--workdir", str(project)]


def flow_env(shared_api: bool = False) -> dict[str, str]:
    """The flow command's environment: this checkout's code, no cluster, and, unless `shared_api` (the session's
    Prefect API of the `prefect_api` fixture, which saves each run the ~10 s start of its own), the command
    line's own temporary Prefect server, as `make run` has it."""
    env = {**project_env(), "PYTHONPATH": str(ROOT), "DL_PIPELINE_RETRY_BASE_SECONDS": "0.1"}  # this checkout's code
    env.pop("RAY_ADDRESS", None)
    env.pop("PREFECT_API_URL", None)
    if shared_api:
        from prefect.settings import PREFECT_API_URL

        env["PREFECT_API_URL"] = PREFECT_API_URL.value()
    return env


def left_over(temp_dir: str) -> list[str]:
    """Live processes of the run's Ray instance (its raylet, GCS, workers all name its temp dir)."""
    out = subprocess.run(["ps", "-eo", "stat=,args="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if temp_dir in line and not line.startswith("Z")]


def processes_in(project: Path) -> list[int]:
    """Live processes working in the project (a stage's `dvc repro` and its command run there)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if (
                entry.name.isdigit()
                and Path(os.readlink(entry / "cwd")).is_relative_to(project)
                and (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"  # not a zombie
            ):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def heads(output: str) -> list[tuple[str, int, str]]:
    return [(a, int(pid), tmp) for a, pid, tmp in RAY_LINE.findall(output)]


def test_one_ray_instance_serves_the_run_and_nothing_is_left_also_after_a_failure(tmp_path, prefect_api):
    params = one_candidate_params({"breast": "sklearn:breast_cancer", "wine": "sklearn:wine"}, epochs=2)
    project = copy_project(tmp_path / "project", params)
    timings = tmp_path / "timings.json"
    proc = subprocess.run(
        [*flow_command(project), "--parallel", "2"],
        capture_output=True,
        text=True,
        env={**flow_env(), "DL_PIPELINE_TIMINGS": str(timings)},
        timeout=900,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    # Quiet: none of DVC's per-stage git hints or bookkeeping; the run ends with one summary of what to keep.
    for chatter in ("To track the changes with git", "autostage", "Use `dvc push`", "Updating lock file", "> python"):
        assert chatter not in output, chatter
    assert "Running stage 'train@breast'" in output  # a stage's start is still said
    lines = proc.stdout.strip().splitlines()
    summary = lines[lines.index("Done.") :]  # a line per dataset, where to look, what to keep
    assert len(summary) == 5 and summary[-1].startswith("Outputs pushed to the DVC remote 'local'. "), summary
    assert re.search(r"To keep this run in git: git add .*dvc\.lock.* && git commit$", summary[-1]), summary
    # Progress: which candidate of how many, and each epoch's seconds and the stage's share done.
    assert "[breast/fnn] candidate 1 of 1, up to 2 epochs" in output
    assert re.search(r"\[breast/fnn\] epoch 2/2 \(\d+\.\d\d s\) .* \| stage 100%", output), output[-3000:]
    # The two datasets' chains ran side by side: each stage of one overlapped a stage of the other.
    ran = {s["stage"]: (s["started_at"], s["ended_at"]) for s in json.loads(timings.read_text())["stages"]}
    spans = {
        name: (
            min(a for s, (a, _) in ran.items() if s.endswith(name)),
            max(b for s, (_, b) in ran.items() if s.endswith(name)),
        )
        for name in ("@breast", "@wine")
    }
    assert spans["@wine"][0] < spans["@breast"][1] and spans["@breast"][0] < spans["@wine"][1], spans
    started = heads(output)
    assert len(started) == 1, output[-4000:]  # one `ray start --head` for the two train stages
    _, head_pid, temp_dir = started[0]
    # Both stages' workers ran on that one Ray node (a node id is new for every Ray instance).
    nodes = set()
    for name in ("breast", "wine"):
        summary = json.loads((project / "data" / "train" / name / "summary.json").read_text())
        workers = [w for c in summary["candidates"].values() for w in c["workers"]]
        nodes |= {w["node_id"] for w in workers}
        assert not any(w["in_process"] for w in workers), workers  # Ray Train workers, not local mode
    assert len(nodes) == 1 and None not in nodes, nodes
    assert left_over(temp_dir) == [] and not Path(temp_dir).exists()
    with pytest.raises(ProcessLookupError):
        os.kill(head_pid, 0)

    # A failed run: the second dataset's file is not a table with the label column (found by its ingest).
    bad = project / "bad.csv"
    bad.write_text("a,b\n1,2\n3,4\n")
    failing = one_candidate_params({"breast": "sklearn:breast_cancer", "broken": str(bad)}, epochs=3)
    (project / "params.yaml").write_text(json.dumps(failing))
    # One chain after another: breast's train (changed: 3 epochs) starts the run's Ray before broken's ingest fails.
    proc = subprocess.run(
        [*flow_command(project), "--parallel", "1"],
        capture_output=True,
        text=True,
        env=flow_env(shared_api=True),  # the first run above had the command line's own server
        timeout=900,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output[-4000:]  # the ingest stage's own exit code: bad input
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: stage 'ingest@broken' failed (exit 2): ") and "bad.csv" in last, last
    for _, _, temp_dir in heads(output):  # breast's train changed (3 epochs): a head was started for it
        assert left_over(temp_dir) == [] and not Path(temp_dir).exists()
    assert heads(output), output[-4000:]


def _wait_for(proc: subprocess.Popen, pattern: str, lines: list[str], timeout: float) -> None:
    """Collect the process's output in `lines` (in a thread) until a line matches `pattern`."""
    found = threading.Event()

    def pump() -> None:
        for line in proc.stdout:
            lines.append(line)
            if re.search(pattern, line):
                found.set()
        found.set()  # the process ended first: the assertion below shows why

    threading.Thread(target=pump, daemon=True).start()
    assert found.wait(timeout) and proc.poll() is None, "".join(lines)[-4000:]


def stop_mid_training(project: Path, command: list[str], signum: int, exit_code: int) -> str:
    """Start the flow command as a terminal's foreground job, signal its group at the second epoch, check that it
    stops within seconds with exit_code and leaves nothing behind; its output."""
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=flow_env(shared_api=True),
        start_new_session=True,  # its own group, as a terminal's foreground job
    )
    lines: list[str] = []
    try:
        _wait_for(proc, r"\] epoch 2/", lines, timeout=600)
        os.killpg(proc.pid, signum)  # what a terminal's Ctrl-C (or `kill -TERM -<pgid>`) does
        assert proc.wait(timeout=10) == exit_code, "".join(lines)[-4000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    time.sleep(0.5)  # the output pump's last lines
    output = "".join(lines)
    for _, _, temp_dir in heads(output):  # the run's Ray instance, if it started one
        assert left_over(temp_dir) == [], left_over(temp_dir)
    assert processes_in(project) == []  # dvc repro and the stage it ran
    assert "Crashed" in output or "crashed" in output.lower(), output[-3000:]  # the Prefect run's final state
    # Nothing half-written: no temp file or directory of pipelines/atomic.py in data/, no registered model.
    # (data/ray_results is Ray's run state, checkpoints included, kept on purpose: the rerun resumes from it.)
    partial = [p for p in (project / "data").rglob(".*") if p.name != ".gitignore" and "ray_results" not in p.parts]
    assert partial == []
    assert not (project / "data" / "registry").exists() or not any((project / "data" / "registry").iterdir())
    return output


def test_a_signal_stops_the_run_within_seconds_and_the_same_command_resumes(tmp_path, prefect_api):
    """SIGTERM with the default `num_workers: auto`: training in the train stage's own process, no Ray instance.
    (Ctrl-C during a 2-worker run, and its resume from Ray Train's checkpoint: tests/test_ddp_flow.py.)"""
    epochs = 40
    params = one_candidate_params({"breast": "sklearn:breast_cancer"}, "auto", epochs=epochs)
    params["datasets"]["breast"]["train"]["early_stopping"]["patience"] = epochs  # every epoch runs
    project = copy_project(tmp_path / "project", params)
    output = stop_mid_training(project, flow_command(project), signal.SIGTERM, 143)
    assert heads(output) == [] and "Ray Train local mode" in output, output[-4000:]  # no Ray instance to stop

    # The same command resumes, from the resume point the stage wrote to the run's storage (Ray's local mode keeps
    # its checkpoints in memory only).
    again = subprocess.run(
        flow_command(project), capture_output=True, text=True, env=flow_env(shared_api=True), timeout=900
    )
    rerun = again.stdout + again.stderr
    assert again.returncode == 0, rerun[-4000:]
    trained = re.findall(rf"\] epoch (\d+)/{epochs}", rerun)
    assert trained and len(trained) < epochs and int(trained[0]) > 1, trained  # resumed, not from scratch
    summary = json.loads((project / "data" / "train" / "breast" / "summary.json").read_text())
    assert [c["epochs_run"] for c in summary["candidates"].values()] == [epochs]  # one unbroken learning curve
    assert not any((project / "data" / "ray_results").iterdir())  # the run's resume point went with it
