"""The main job: a Prefect flow whose tasks run the stages of dvc.yaml.

The flow does not re-declare the graph: it asks DVC for the stage order and
runs `dvc repro --single-item <stage>` for each, so a flow run and `dvc repro`
are the same computation and leave the same dvc.lock (and an unchanged stage
is skipped by DVC in both).

    python -m pipelines.flow                                  # every dataset in params.yaml
    python -m pipelines.flow --dataset digits                 # one dataset's chain only
    python -m pipelines.flow -S datasets.digits.train.epochs=5   # validated override, written to params.yaml
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

# No network here and none needed: keep Prefect's and DVC's telemetry off.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

from prefect import flow, get_run_logger, task  # noqa: E402

from pipelines import paths
from pipelines.atomic import atomic_path, read_json
from pipelines.config import PipelineParams, load_params, validate_params
from pipelines.errors import PipelineInputError
from pipelines.paths import DatasetPaths

FLOW_NAME = "training-pipeline"
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


class StageFailed(RuntimeError):
    pass


def stage_order(workdir: Path, datasets: list[str] | None = None) -> list[str]:
    """Stage names of dvc.yaml in dependency order, as DVC sees the graph, one dataset after another.

    Stages are `<stage>@<dataset>` (dvc.yaml's foreach); `datasets` keeps only those datasets' chains.
    """
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(workdir)) as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        ordered = [stage.name for stage in reversed(list(nx.topological_sort(graph))) if getattr(stage, "cmd", None)]
    position = {name: i for i, name in enumerate(ordered)}
    wanted = [n for n in ordered if datasets is None or n.partition("@")[2] in datasets]
    rank = {name: i for i, name in enumerate(datasets or [])}
    for name in wanted:
        rank.setdefault(name.partition("@")[2], len(rank) + position[name])
    # Each dataset's chain runs through before the next starts (in the order asked for):
    # results arrive early and the logs read in order.
    return sorted(wanted, key=lambda n: (rank[n.partition("@")[2]], position[n]))


def _stage_env() -> dict[str, str]:
    """Stages run `python`: make it this interpreter's, and keep DVC out of the tty."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@task(name="dvc-stage", task_run_name="{stage}")
def run_stage(stage: str, workdir: str) -> dict:
    """Run one dvc.yaml stage; DVC skips it when its deps, params and outs are unchanged."""
    logger = get_run_logger()
    dvc = str(Path(sys.executable).parent / "dvc")
    started = time.perf_counter()
    proc = subprocess.Popen(
        [dvc, "repro", "--single-item", stage],
        cwd=workdir,
        env=_stage_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    tail: list[str] = []
    skipped = False
    assert proc.stdout is not None
    for line in proc.stdout:
        line = ANSI_ESCAPE.sub("", line).rstrip()
        if not line:
            continue
        skipped |= "didn't change, skipping" in line
        tail = (tail + [line])[-30:]
        logger.info(line)
    if proc.wait() != 0:
        errors = [l for l in tail if l.startswith(("error:", "ERROR"))] or tail[-10:]
        raise StageFailed(f"stage '{stage}' failed (exit {proc.returncode}):\n" + "\n".join(errors))
    return {"stage": stage, "skipped": skipped, "seconds": round(time.perf_counter() - started, 2)}


def _write_params(params: PipelineParams, workdir: Path) -> bool:
    """Write validated flow parameters to params.yaml (DVC reads them from there)."""
    target = workdir / paths.PARAMS_FILE
    current = yaml.safe_load(target.read_text()) if target.exists() else None
    wanted = params.model_dump(mode="json")
    if current == wanted:
        return False
    with atomic_path(target) as tmp:
        tmp.write_text(params.to_yaml())
    return True


@flow(name=FLOW_NAME, log_prints=True, validate_parameters=True)
def training_pipeline(params: PipelineParams | None = None, datasets: list[str] | None = None, workdir: str = ".") -> dict:
    """ingest -> prepare -> train -> evaluate -> register for each dataset, as declared in dvc.yaml.

    `params` (shown as a form in the Prefect UI) replaces params.yaml when given;
    when left empty, params.yaml is used as it is. `datasets` picks which
    datasets' chains to run (all when empty).
    """
    logger = get_run_logger()
    root = Path(workdir).resolve()
    if params is None:
        params = load_params(root / paths.PARAMS_FILE)  # fail fast on bad params
    elif _write_params(params, root):
        logger.warning("params.yaml updated from the flow's parameters (the previous values are in git)")
    for name in datasets or []:
        params.dataset(name)  # an unknown name fails here, naming the ones there are
    chosen = list(datasets or params.datasets)
    results = [run_stage(stage, str(root)) for stage in stage_order(root, chosen)]
    outcome = {}
    for name in chosen:
        where = DatasetPaths(name)
        registered = read_json(root / where.registered_file)
        metrics = read_json(root / where.metrics_file)
        primary = metrics["primary_metric"]
        logger.info(
            f"{name}: registered {registered['name']} v{registered['version']} ({registered['candidate']}), "
            f"test {primary}={metrics['best'].get('test_' + primary):.4f}; plots {where.plots_dir}/"
        )
        outcome[name] = {"registered": registered, "best": metrics["best"], "primary_metric": primary}
    return {"stages": results, "datasets": outcome}


def parse_overrides(pairs: list[str], base: dict) -> dict:
    """Apply `-S a.b.c=value` overrides (YAML values), like `dvc exp run -S`."""
    data = yaml.safe_load(yaml.safe_dump(base))
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise PipelineInputError(f"-S {pair!r}: expected key=value, e.g. -S datasets.digits.train.epochs=5")
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise PipelineInputError(f"-S {pair!r}: {part} is not a section")
        node[leaf] = yaml.safe_load(raw)
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.flow", description=__doc__.split("\n\n")[0])
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE", help="override a param, e.g. datasets.digits.train.epochs=5")
    parser.add_argument("--dataset", action="append", default=None, metavar="NAME", help="run only this dataset's stages (repeatable)")
    parser.add_argument("--workdir", default=".", help="project root (holds dvc.yaml and params.yaml)")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    try:
        params = load_params(workdir / paths.PARAMS_FILE)
        if args.set:
            params = validate_params(parse_overrides(args.set, params.model_dump(mode="json")), "-S override")
        for name in args.dataset or []:
            params.dataset(name)
    except PipelineInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        result = training_pipeline(params=params if args.set else None, datasets=args.dataset, workdir=str(workdir))
    except StageFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print("\nDone.")
    for name, done in result["datasets"].items():
        reg, primary = done["registered"], done["primary_metric"]
        print(f"  {name:<10} {reg['name']} v{reg['version']} ({reg['candidate']}): test {primary} {done['best']['test_' + primary]:.4f}"
              f"   plots: {DatasetPaths(name).plots_dir}/")
    print("Metrics: dvc metrics show   Plots: dvc plots show (or the PNGs above)   Models: data/registry/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
