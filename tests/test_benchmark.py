"""The benchmark command README documents runs every side and prints numbers a person can read.

Speed itself is not asserted here (timings in tests flake on shared machines);
`make bench` prints the ratios, and BENCHMARKS.md records them.
"""

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

NUMBER = r"([0-9]+(?:\.[0-9]+)?)"


@pytest.mark.slow
def test_the_fnn_benchmark_runs_every_side_and_prints_ratios_and_fixed_costs():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.fnn",
            "--rows",
            "4096",
            "--epochs",
            "3",
            "--hidden",
            "32",
            "--batch",
            "256",
            "--repeats",
            "1",
            "--cnn-rows",
            "1024",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = proc.stdout
    for side in (
        "hand-written loop, 1 process x 2 threads",
        "hand-written DDP, 2 processes x 1 thread(s)",
        "hand-written loop, with Ray idling beside it",
        "our train path, auto (in process, 2 CPUs)",
        "our train path, 1 Ray worker x 2 CPUs",
        "our train path, 2 workers x 1 CPU(s)",
    ):
        found = re.search(re.escape(side) + r"\s*:\s*" + NUMBER + " samples/s", out)
        assert found, f"no throughput for {side!r} in:\n{out}"
        assert float(found.group(1)) > 0
    for ratio in (
        "ours auto (in process) / hand loop",
        "ours 1 Ray worker / hand loop",
        "ours 2 workers / hand-written DDP",
        "hand-written DDP / hand-written loop",
        "loop beside idle Ray / loop",
        "ours 1 Ray worker / loop beside Ray",
    ):
        found = re.search(re.escape(ratio) + r"\s+" + NUMBER, out)
        assert found and float(found.group(1)) > 0, f"no ratio {ratio!r} in:\n{out}"
    for family in ("FNN", "CNN (8x8 images)"):
        line = rf"per step, {re.escape(family)}, global batch 256: 2 workers .* ms, 1 worker .* ms; 2 / 1 = "
        assert re.search(line + NUMBER, out), out
    for cost in (
        "Ray start (local instance)",
        "worker group start (to first epoch)",
        "worker group teardown",
        "Prefect start (embedded API, one-task flow; once per run)",
        "train stage process start and imports (once per stage)",
        "total, auto (in process)",
        "total, 1 Ray worker",
        "total, 2 workers",
    ):
        assert re.search(re.escape(cost) + r"\s+" + NUMBER + " s", out), f"no fixed cost {cost!r} in:\n{out}"


def test_benchmark_refuses_cpus_that_do_not_split_over_workers():
    proc = subprocess.run(
        [sys.executable, "-m", "bench.fnn", "--cpus", "3", "--workers", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "--cpus 3 does not split evenly over --workers 2" in proc.stderr


def test_the_pipeline_benchmark_counts_overlapping_stages_once():
    """Chains side by side: the stages' wall time is the union of their intervals, not their sum."""
    from bench.pipeline import covered

    assert covered([]) == 0.0
    assert covered([(0.0, 10.0), (5.0, 12.0), (20.0, 21.0)]) == 13.0
    assert covered([(0.0, 10.0), (2.0, 3.0)]) == 10.0
