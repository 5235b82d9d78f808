"""What checking the bytes against dvc.lock costs (pipelines/integrity.py): per run, and per GB.

    python -m bench.verify [--workdir DIR] [--gb 1] [--repeats 3]

1. The default run's data, in DIR (default: this checkout), after a run (`make run`) wrote its dvc.lock:
   every stage's check of its inputs, each in a fresh process as a stage runs it (dvc_data's import,
   dvc.lock's parse, the hashing; not the stage's own imports), summed over every stage of every
   dataset; then the flow's check of the cache objects before `dvc push` (every output of every stage).
2. A generated output of --gb GB in a temp DVC repo (a `dvc repro` writes it and caches it): the stage
   check and the push check of that one file, in MB/s. The file was just written, so it is read from
   the page cache: this is hashing speed, not disk speed.

Each figure is the median of --repeats runs, with min and max.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STAGES = ("prepare", "train", "evaluate", "register")
# One stage's check in a fresh process, as the stage's entry point runs it (stages/cli.py): what the
# stage imports anyway (its params schema) is not counted; dvc_data's import (lazy, for the check) is.
_STAGE_CHECK = """
import sys, time
sys.path.insert(0, {root!r})
from pipelines.integrity import verify_inputs
from pipelines.stages.cli import inputs_for
t = time.perf_counter()
verify_inputs(inputs_for({stage!r}, {dataset!r}))
print(time.perf_counter() - t)
"""
_PUSH_CHECK = """
import sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
from pipelines.integrity import locked_stages, verify_cache
t = time.perf_counter()
n = verify_cache({stages!r} or list(locked_stages()), Path("."))
print(time.perf_counter() - t, n)
"""


def python(code: str, cwd: Path) -> list[str]:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run([str(BIN / "python"), "-c", code], cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench.verify: the check failed in {cwd}:\n{proc.stderr[-2000:]}")
    return proc.stdout.split()


def spread(values: list[float], unit: str = "s", digits: int = 2) -> str:
    return f"{statistics.median(values):.{digits}f} {unit} (min {min(values):.{digits}f}, max {max(values):.{digits}f})"


def size_of(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def default_run(workdir: Path, repeats: int) -> None:
    from pipelines.integrity import locked_stages

    locked = locked_stages(workdir / "dvc.lock")
    datasets = sorted({name.partition("@")[2] for name in locked if name.startswith("train@")})
    if not datasets:
        raise SystemExit(f"bench.verify: {workdir}/dvc.lock records no train stage: run `make run` there first")
    for kind in ("prepared", "train"):
        sizes = ", ".join(f"{ds} {size_of(workdir / 'data' / kind / ds) / 1e6:.2f} MB" for ds in datasets)
        print(f"data/{kind}/: {sizes}")
    stages = [f"{stage}@{ds}" for ds in datasets for stage in STAGES if f"{stage}@{ds}" in locked]
    per_run, by_stage = [], {s: [] for s in stages}
    for _ in range(repeats):
        total = 0.0
        for name in stages:
            stage, _, dataset = name.partition("@")
            seconds = float(python(_STAGE_CHECK.format(root=str(ROOT), stage=stage, dataset=dataset), workdir)[0])
            by_stage[name].append(seconds)
            total += seconds
        per_run.append(total)
    for name, values in by_stage.items():
        print(f"  {name:<20} {spread(values, digits=3)}")
    print(f"stage checks, {len(stages)} stages summed: {spread(per_run)}")
    push, objects = [], 0
    for _ in range(repeats):
        seconds, objects = python(_PUSH_CHECK.format(root=str(ROOT), stages=[]), workdir)
        push.append(float(seconds))
    pushed = sum(size_of(workdir / out["path"]) for entry in locked.values() for out in entry.get("outs", []))
    print(f"push check, {objects} cache objects ({pushed / 1e6:.1f} MB): {spread(push)}")
    whole = [a + b for a, b in zip(per_run, push, strict=True)]
    print(f"per run: {spread(whole)}; {100 * statistics.median(whole) / 85:.1f} % of a default `make run` (~85 s)")


GENERATE = (
    "import os, sys; chunk = os.urandom(1 << 26); f = open('big.bin', 'wb'); "
    "[f.write(chunk) for _ in range(int(float(sys.argv[1]) * 16))]; f.close()"
)


def one_big_output(gb: float, repeats: int) -> None:
    """A `gen` stage writes --gb GB; DVC caches it; then both checks, timed."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-verify-"))
    try:
        env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        subprocess.run([str(BIN / "dvc"), "init", "--no-scm", "-q"], cwd=tmp, env=env, check=True)
        stage = {"cmd": f'python -c "{GENERATE}" {gb}', "outs": ["big.bin"]}
        (tmp / "dvc.yaml").write_text(json.dumps({"stages": {"gen": stage}}))
        started = time.perf_counter()
        subprocess.run([str(BIN / "dvc"), "repro", "-q"], cwd=tmp, env=env, check=True)
        mb = (tmp / "big.bin").stat().st_size / 1e6
        print(f"\n{mb:.0f} MB output: written and cached by `dvc repro` in {time.perf_counter() - started:.1f} s")
        check = f"""
import sys, time
sys.path.insert(0, {str(ROOT)!r})
from pathlib import Path
from pipelines.integrity import verify_cache, verify_inputs
t = time.perf_counter(); verify_inputs([Path("big.bin")]); a = time.perf_counter() - t
t = time.perf_counter(); verify_cache(["gen"], Path(".")); print(a, time.perf_counter() - t)
"""
        times = [tuple(map(float, python(check, tmp))) for _ in range(repeats)]
        for label, values in (("stage check", [t[0] for t in times]), ("push check", [t[1] for t in times])):
            rates = [mb / s for s in values]
            print(f"  {label}: {spread(values)}; {spread(rates, 'MB/s', 0)}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=ROOT, help="a project after a default run (its dvc.lock)")
    parser.add_argument("--gb", type=float, default=1.0, help="size of the generated output (0: skip it)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    default_run(args.workdir.resolve(), args.repeats)
    if args.gb > 0:
        one_big_output(args.gb, args.repeats)


if __name__ == "__main__":
    main()
