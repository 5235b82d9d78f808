"""Where a `make run` goes: the default main job in a temp copy of the project, its time broken down.

    python -m bench.pipeline [--dataset NAME ...] [-S key=value ...] [--keep]
    make bench ARGS=pipeline

Prints: the whole command's wall time; Prefect's start (its temporary API server, then the
flow's own overhead around the stages); the one Ray instance's start; per stage its wall time
with DVC's own share (a `dvc repro` of that stage with nothing changed, measured after the run);
for each train stage what its summary records (Ray start, per candidate set-up, epochs,
checkpointing, teardown: fields the train stage may or may not write are read if present).
Also `dvc repro` with nothing changed, over all the stages, as a user would type it.

The datasets' chains run side by side (the flow's `--parallel`, one per core by default), so the
stages' seconds add up to more than the wall time they covered: both are printed, and the line
the targets are about is the wall time split into training epochs and everything else.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RAY_LINE = re.compile(r"Ray for this run: .* started in ([\d.]+)s")


def copy_project(dest: Path) -> Path:
    """The tracked files, without outputs, as a fresh git repo whose DVC remote is a temp dir."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for rel in filter(None, files.split("\0")):
        if (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    for out in ("data/raw", "data/prepared", "data/train", "data/evaluate", "data/register", "data/registry"):
        shutil.rmtree(dest / out, ignore_errors=True)
    (dest / "dvc.lock").unlink(missing_ok=True)
    git = ["git", "-c", "user.email=bench@example.com", "-c", "user.name=bench"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "bench copy"], cwd=dest, check=True)
    remote = dest.parent / "dvc-remote"
    subprocess.run([str(BIN / "dvc"), "remote", "modify", "--local", "local", "url", str(remote)], cwd=dest, check=True)
    return dest


def env_for(project: Path) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONPATH": str(project)}
    env.update({"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DVC_NO_ANALYTICS": "1"})
    for key in ("RAY_ADDRESS", "PREFECT_API_URL"):
        env.pop(key, None)
    return env


def run_flow(project: Path, args: list[str]) -> tuple[float, dict, str]:
    timings_file = project.parent / "timings.json"
    env = {**env_for(project), "DL_PIPELINE_TIMINGS": str(timings_file)}
    started = time.perf_counter()
    cmd = [str(BIN / "python"), "-m", "pipelines.orchestration.flow", *args]
    proc = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        sys.exit(f"the flow failed (exit {proc.returncode}):\n{output[-3000:]}")
    return wall, json.loads(timings_file.read_text()), output


def dvc_noop(project: Path, stage: str | None = None, repeat: int = 3) -> float:
    """Median seconds of `dvc repro` (one stage, or all) when nothing changed."""
    cmd = [str(BIN / "dvc"), "repro", *(["--single-item", stage] if stage else [])]
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        proc = subprocess.run(cmd, cwd=project, env=env_for(project), capture_output=True, text=True)
        times.append(time.perf_counter() - started)
        if proc.returncode != 0 or "Running stage" in proc.stdout:
            sys.exit(f"`{' '.join(cmd)}` was not a no-op:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return statistics.median(times)


def numbers(record: dict, suffix: str = "_s") -> dict[str, float]:
    """The timing fields of a record (names ending in _s or _seconds, or 'seconds'), whatever the stage wrote."""
    return {
        k: float(v)
        for k, v in record.items()
        if isinstance(v, (int, float)) and (k.endswith(suffix) or k.endswith("_seconds") or k == "seconds")
    }


def covered(intervals: list[tuple[float, float]]) -> float:
    """Seconds covered by the union of (start, end) intervals: stages that overlap count once."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def epoch_seconds(project: Path, dataset: str) -> dict[str, float]:
    """Each candidate's training epochs (history.csv's epoch_seconds), by candidate name."""
    found = {}
    for history in sorted((project / "data" / "train" / dataset).glob("*/history.csv")):
        with history.open() as f:
            found[history.parent.name] = sum(float(r.get("epoch_seconds") or 0) for r in csv.DictReader(f))
    return found


def first_batches(project: Path, dataset: str, stage_started: float) -> list[str]:
    """When each candidate's first epoch began: the first after the stage's launch, each later one after the
    previous candidate's last epoch ended (history.csv's epoch_start_time and epoch_seconds)."""
    runs = []
    for history in (project / "data" / "train" / dataset).glob("*/history.csv"):
        with history.open() as f:
            rows = [r for r in csv.DictReader(f) if r.get("epoch_start_time")]
        if rows:
            last = rows[-1]
            runs.append(
                (
                    float(rows[0]["epoch_start_time"]),
                    float(last["epoch_start_time"]) + float(last["epoch_seconds"]),
                    history.parent.name,
                )
            )
    runs.sort()
    lines, previous_end = [], stage_started
    for i, (start, end, name) in enumerate(runs):
        since = "the stage's launch" if i == 0 else "the previous candidate's last epoch"
        lines.append(f"      first batch of {name:<14} {start - previous_end:6.1f} s after {since}")
        previous_end = end
    return lines


def train_breakdown(project: Path, dataset: str) -> list[str]:
    summary_file = project / "data" / "train" / dataset / "summary.json"
    if not summary_file.exists():
        return []
    summary = json.loads(summary_file.read_text())
    lines = [f"      {k:<28} {v:7.1f} s" for k, v in numbers(summary).items()]
    for key in ("timings", "timing"):  # a nested breakdown, if the train stage writes one
        if isinstance(summary.get(key), dict):
            lines += [f"      {k:<28} {v:7.1f} s" for k, v in numbers(summary[key], "").items()]
    epochs_of = epoch_seconds(project, dataset)
    for name, cand in summary.get("candidates", {}).items():
        epochs = epochs_of.get(name, 0.0)
        total = float(cand.get("seconds", 0))
        extra = ", ".join(f"{k}={v:.1f}" for k, v in numbers(cand).items() if k != "seconds")
        lines.append(
            f"      {name:<20} {total:7.1f} s: epochs {epochs:6.1f} s ({cand.get('epochs_run', '?')}), "
            f"rest {total - epochs:5.1f} s{'; ' + extra if extra else ''}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", action="append", default=[], help="only these datasets (default: all)")
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--parallel", type=int, default=None, help="the flow's --parallel (default: the flow's)")
    parser.add_argument("--keep", action="store_true", help="keep the temp project (its path is printed)")
    args = parser.parse_args(argv)
    temp = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    try:
        project = copy_project(temp / "project")
        flow_args = [f"--dataset={d}" for d in args.dataset] + [f"-S{s}" for s in args.set]
        flow_args += [f"--parallel={args.parallel}"] if args.parallel else []
        wall, timings, output = run_flow(project, flow_args)
        stages = timings["stages"]
        in_stages = sum(s["seconds"] for s in stages)
        stages_wall = covered([(s["started_at"], s["ended_at"]) for s in stages])
        epochs = sum(
            sum(epoch_seconds(project, s["stage"].partition("@")[2]).values())
            for s in stages
            if s["stage"].startswith("train@")
        )
        ray = RAY_LINE.search(output)
        print(f"make run (default main job, {os.cpu_count()} cores): {wall:.1f} s from command to exit")
        print(
            f"  training epochs (all candidates) {epochs:5.1f} s; everything else (wall - epochs) {wall - epochs:.1f} s"
        )
        print(f"  Prefect API start              {timings['prefect_api_s']:7.1f} s")
        print(
            f"  flow outside stages            {timings['flow_s'] - stages_wall:7.1f} s (Prefect, pull/push, artifacts)"
        )
        print(f"  command start/exit, rest       {wall - timings['flow_s'] - timings['prefect_api_s']:7.1f} s")
        print(f"  Ray instance start (once)      {float(ray.group(1)) if ray else 0.0:7.1f} s")
        print(f"  stages                         {stages_wall:7.1f} s of wall ({in_stages:.1f} s of stage time in all)")
        dvc_total = 0.0
        for s in stages:
            own = dvc_noop(project, s["stage"], repeat=1)
            dvc_total += own
            print(f"    {s['stage']:<28} {s['seconds']:7.1f} s (DVC's own ~{own:.1f} s)")
            if s["stage"].startswith("train@"):
                dataset = s["stage"].partition("@")[2]
                print("\n".join(train_breakdown(project, dataset) + first_batches(project, dataset, s["started_at"])))
        print(f"  DVC's own time, all stages    ~{dvc_total:7.1f} s")
        print(f"dvc repro, nothing changed ({len(stages)} stages): {dvc_noop(project):.2f} s (median of 3)")
        if args.keep:
            print(f"project kept: {project}")
    finally:
        if not args.keep:
            shutil.rmtree(temp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
