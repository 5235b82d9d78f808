"""The main job: a Prefect flow whose tasks run the stages of dvc.yaml.

The flow does not re-declare the graph: it asks DVC for the stage order and
runs `dvc repro --single-item <stage>` for each, so a flow run and `dvc repro`
are the same computation and leave the same dvc.lock (and an unchanged stage
is skipped by DVC in both).

    python -m pipelines.orchestration.flow                                  # every dataset in params.yaml
    python -m pipelines.orchestration.flow --dataset digits                 # one dataset's chain only
    python -m pipelines.orchestration.flow -S datasets.digits.train.epochs=5
        # validated override, written to params.yaml

From the Prefect UI: `make serve` (pipelines/orchestration/serve.py) serves this flow's deployments.
A run holds its workspace for its whole length (pipelines/workspace.py), so runs
that share one take turns; each dataset's results are published as artifacts on
the run's page (pipelines/orchestration/artifacts.py).
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
from prefect.tasks import exponential_backoff  # noqa: E402

from pipelines import paths, workspace
from pipelines.atomic import atomic_path, read_json
from pipelines.config import PipelineParams, load_params, validate_params
from pipelines.errors import EXIT_BAD_INPUT, EXIT_UNAVAILABLE, PipelineInputError
from pipelines.handoffs import upgrade_report
from pipelines.orchestration.artifacts import publish_dataset, publish_summary
from pipelines.paths import DatasetPaths

FLOW_NAME = "training-pipeline"
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
STAGE_EXIT = re.compile(r"exited with (-?\d+)")
# DVC's repository lock, and its lock on a stage's deps and outs: another dvc command is at work here.
DVC_LOCK_BUSY = ("Unable to acquire lock", "is busy, it is being blocked by")
PREVIOUS_PARAMS = Path(".dvc/tmp/params.previous.yaml")
# Retries of a stage that failed for a reason outside it wait 10 s, 20 s, 40 s (+ jitter).
RETRY_BASE_SECONDS = float(os.environ.get("DL_PIPELINE_RETRY_BASE_SECONDS", "10"))


class StageFailed(RuntimeError):
    """A stage's `dvc repro` failed; `exit_code` is the stage command's own (2: bad input, 75: source unavailable)."""

    def __init__(self, stage: str, message: str, exit_code: int | None = None, lock_busy: bool = False):
        super().__init__(message)
        self.stage, self.exit_code, self.lock_busy = stage, exit_code, lock_busy

    def __reduce__(self):  # keep the fields when Prefect pickles the exception into the task's state
        return (type(self), (self.stage, str(self), self.exit_code, self.lock_busy))

    @property
    def transient(self) -> bool:
        """Worth another attempt: never bad input; a source that was down or DVC's lock held by
        another dvc command always; any other failure only for ingest, the stage that reaches out."""
        if self.exit_code == EXIT_BAD_INPUT:
            return False
        if self.lock_busy or self.exit_code == EXIT_UNAVAILABLE:
            return True
        return self.stage.startswith("ingest@")


def _retry_transient(task, task_run, state) -> bool:
    """Prefect's retry_condition_fn: retry only StageFailed.transient (bad input fails at once)."""
    err = state.data if isinstance(state.data, BaseException) else state.result(raise_on_failure=False)
    return isinstance(err, StageFailed) and err.transient


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


@task(
    name="dvc-stage",
    task_run_name="{stage}",
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=RETRY_BASE_SECONDS),
    retry_jitter_factor=0.2,
    retry_condition_fn=_retry_transient,
)
def run_stage(stage: str, workdir: str, force: bool = False) -> dict:
    """Run one dvc.yaml stage; DVC skips it when its deps, params and outs are unchanged (unless `force`).

    `dvc repro` runs in its own process group (with the stage's command and, for
    train, the Ray instance it starts); if this run is cancelled or interrupted
    the whole group is stopped, so no training outlives its run.
    """
    logger = get_run_logger()
    dvc = str(Path(sys.executable).parent / "dvc")
    started = time.perf_counter()
    lock = workspace.held(workdir)
    env = _stage_env()
    if lock:
        env[workspace.TOKEN_ENV] = lock.record["token"]  # this run's stages may use the workspace it holds
    proc = subprocess.Popen(
        [dvc, "repro", "--single-item", *(["--force"] if force else []), stage],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,
    )
    if lock:
        lock.note(stage=stage, stage_pgid=proc.pid)
    tail: list[str] = []
    skipped = False
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            line = ANSI_ESCAPE.sub("", line).rstrip()
            if not line:
                continue
            skipped |= "didn't change, skipping" in line
            tail = (tail + [line])[-30:]
            logger.info(line)
        proc.wait()
    except BaseException as exc:  # cancellation (SIGTERM -> TerminationSignal), Ctrl-C, ...
        logger.warning(f"{stage}: stopping its processes ({type(exc).__name__})")
        workspace.stop_process_group(proc.pid, reap=proc.poll)
        raise
    finally:
        if lock:
            lock.note(stage=None, stage_pgid=None)
    if proc.returncode != 0:
        errors = [line for line in tail if line.startswith(("error:", "ERROR"))] or tail[-10:]
        found = STAGE_EXIT.findall("\n".join(tail))
        lock_busy = any(busy in line for line in tail for busy in DVC_LOCK_BUSY)
        hint = "\n(another dvc command is using this workspace: DVC's lock; retried with backoff)" if lock_busy else ""
        raise StageFailed(
            stage,
            f"stage '{stage}' failed (exit {proc.returncode}):\n" + "\n".join(errors) + hint,
            exit_code=int(found[-1]) if found else None,
            lock_busy=lock_busy,
        )
    return {"stage": stage, "skipped": skipped, "seconds": round(time.perf_counter() - started, 2)}


def default_remote(workdir: str) -> str | None:
    """The DVC remote named by `core.remote`: `local` as committed (None: a project without one, nothing to sync)."""
    from dvc.repo import Repo

    with Repo(workdir) as repo:
        return repo.config["core"].get("remote")


def recorded_stages(workdir: Path, stages: list[str]) -> list[str]:
    """The stages among `stages` that dvc.lock records: only their outputs can be pulled.

    A first run (no dvc.lock, or new datasets) has nothing to pull for the others; asking DVC
    anyway only prints a "No file hash info found" warning per output.
    """
    lock = Path(workdir) / "dvc.lock"
    recorded = (yaml.safe_load(lock.read_text()) or {}).get("stages", {}) if lock.exists() else {}
    return [stage for stage in stages if stage in recorded]


@task(
    name="dvc-sync",
    task_run_name="dvc-{action}",
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=RETRY_BASE_SECONDS),
    retry_jitter_factor=0.2,
)
def dvc_sync(action: str, workdir: str, stages: list[str]) -> str:
    """`dvc pull` what the chosen stages' recorded outputs need before a run, `dvc push` what they made after.

    A remote (S3, a shared directory) is infrastructure: a failure is retried with backoff.
    Pull uses --allow-missing: outputs never pushed are simply recomputed by the stages.
    """
    logger = get_run_logger()
    dvc = str(Path(sys.executable).parent / "dvc")
    cmd = [dvc, action, *(["--allow-missing"] if action == "pull" else []), *stages]
    proc = subprocess.run(cmd, cwd=workdir, env=_stage_env(), capture_output=True, text=True)
    output = ANSI_ESCAPE.sub("", proc.stdout + proc.stderr).strip()
    for line in output.splitlines()[-15:]:
        logger.info(line)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc {action} failed (exit {proc.returncode}): {output.splitlines()[-1] if output else ''}")
    return output.splitlines()[-1] if output else ""


def save_experiment(workdir: str, name: str) -> str:
    """Record this run's workspace (params, dvc.lock, metrics) as a DVC experiment: it shows in `dvc exp show`."""
    safe = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "flow-run"
    # dvc.lock is what makes it an experiment of this run; include it even before it was ever committed.
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), "exp", "save", "--force", "-n", safe, "-I", "dvc.lock"],
        cwd=workdir,
        env=_stage_env(),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"dvc exp save failed: {(proc.stdout + proc.stderr).strip()[-500:]}")
    return safe


@task(name="artifacts", task_run_name="artifacts@{dataset}")
def publish_artifacts(dataset: str, workdir: str, registry: str, reused: bool = False) -> dict[str, str]:
    """The dataset's metrics table, plots, registered model and checkpoint link, on the run's page."""
    return publish_dataset(workdir, dataset, registry, reused=reused)


def _write_params(params: PipelineParams, workdir: Path) -> bool:
    """Write validated flow parameters to params.yaml (DVC reads them from there); the old file goes to .dvc/tmp/."""
    target = workdir / paths.PARAMS_FILE
    current = yaml.safe_load(target.read_text()) if target.exists() else None
    wanted = params.model_dump(mode="json")
    if current == wanted:
        return False
    if target.exists():
        (workdir / PREVIOUS_PARAMS).parent.mkdir(parents=True, exist_ok=True)
        (workdir / PREVIOUS_PARAMS).write_text(target.read_text())
    with atomic_path(target) as tmp:
        tmp.write_text(params.to_yaml())
    return True


def run_name() -> str:
    """The flow run's name: its datasets and their model families, e.g. `tabular(fnn) text(gru,lstm)`."""
    from prefect.runtime import flow_run

    try:
        given = flow_run.parameters or {}
        params = given.get("params")
        if params is None:
            params = yaml.safe_load((Path(given.get("workdir") or ".") / paths.PARAMS_FILE).read_text())
        elif isinstance(params, PipelineParams):
            params = params.model_dump(mode="json")
        sets = params.get("datasets") or {}
        names = given.get("datasets") or list(sets)
        parts = []
        for name in names:
            candidates = ((sets.get(name) or {}).get("train") or {}).get("candidates") or {}
            families = sorted({c.get("family", "fnn") for c in candidates.values() if isinstance(c, dict)})
            parts.append(f"{name}({','.join(families)})" if families else name)
        return " ".join(parts)[:120] or FLOW_NAME
    except Exception:  # a name is never worth failing a run for; bad params fail with their own message
        return FLOW_NAME


def stop_running_stage(flow, flow_run, state) -> None:
    """on_cancellation / on_crashed hook: stop a stage the flow process left behind.

    The flow stops its stage itself when it is cancelled; this covers a flow
    process that was killed outright (the runner's SIGKILL after its grace period,
    the OOM killer), using the process group the workspace lock recorded.
    """
    root = Path((flow_run.parameters or {}).get("workdir") or ".")
    record = workspace.read_record(root) or {}
    ours = record.get("flow_run_id") == str(flow_run.id) and record.get("stage_pgid")
    if ours and workspace.stop_process_group(int(record["stage_pgid"])):
        print(f"stopped {record.get('stage')} (process group {record['stage_pgid']}) of flow run {flow_run.name}")


@flow(
    name=FLOW_NAME,
    log_prints=True,
    validate_parameters=True,
    flow_run_name=run_name,
    on_cancellation=[stop_running_stage],
    on_crashed=[stop_running_stage],
)
def training_pipeline(
    params: PipelineParams | None = None,
    datasets: list[str] | None = None,
    workdir: str = ".",
    refresh: bool = False,
    save_experiment_as: str | None = None,
) -> dict:
    """ingest -> prepare -> train -> evaluate -> register for each dataset, as declared in dvc.yaml.

    Args:
        params: The whole pipeline config (the schema of params.yaml). When given it
            replaces params.yaml, and every key is validated; leave it empty to use
            params.yaml as it is.
        datasets: Which datasets' chains to run, by name (all of params.yaml's when empty).
        workdir: The project root (the DVC workspace: dvc.yaml, params.yaml, data/).
        refresh: Ingest the chosen datasets again even if their sources' names did not
            change (DVC tracks the name of a source, not its contents): for new data
            at the same place. What follows re-runs only if the data did change.
        save_experiment_as: Also record the finished run as a DVC experiment of this
            name (then `dvc exp show` lists it beside `dvc exp run` experiments).

    The run pulls what its stages need from the default DVC remote first and pushes
    what they made after it succeeds: the committed `local` remote, a directory under
    ~/.local/share, unless repointed (`dvc remote modify --local local url ...`) or
    replaced (`dvc remote add -d storage s3://...`).
    """
    from prefect.runtime import flow_run

    logger = get_run_logger()
    root = Path(workdir).resolve()
    record = {"flow_run_id": str(flow_run.id), "flow_run_name": flow_run.name, "ui_url": flow_run.ui_url}
    # The whole run holds the workspace: params.yaml, dvc.lock and data/ are one run's at a time.
    with workspace.hold(root, record, on_wait=logger.warning):
        if params is None:
            params = load_params(root / paths.PARAMS_FILE)  # fail fast on bad params
        elif _write_params(params, root):
            logger.warning(f"params.yaml updated from the flow's parameters (the previous file is {PREVIOUS_PARAMS})")
        for name in datasets or []:
            params.dataset(name)  # an unknown name fails here, naming the ones there are
        chosen = list(datasets or params.datasets)
        stages = stage_order(root, chosen)
        remote = default_remote(str(root))
        to_pull = recorded_stages(root, stages) if remote else []
        if to_pull:
            dvc_sync("pull", str(root), to_pull)
        elif remote:
            logger.info(f"dvc.lock records none of these stages yet: nothing to pull from remote {remote!r}")
        results = []
        for stage in stages:
            results.append(run_stage(stage, str(root), force=refresh and stage.startswith("ingest@")))
            step, _, dataset = stage.partition("@")
            if step == "register":
                publish_artifacts(dataset, str(root), params.register.registry, reused=results[-1]["skipped"])
        outcome = _outcome(root, chosen, logger)
        publish_summary(root, chosen)
        if remote:
            dvc_sync("push", str(root), stages)
        if save_experiment_as:
            logger.info(f"saved as DVC experiment {save_experiment(str(root), save_experiment_as)}")
    return {"stages": results, "datasets": outcome}


def _outcome(root: Path, chosen: list[str], logger) -> dict:
    outcome = {}
    for name in chosen:
        where = DatasetPaths(name)
        registered = read_json(root / where.registered_file)
        metrics = upgrade_report(read_json(root / where.metrics_file))
        primary = metrics["primary_metric"]
        logger.info(
            f"{name}: registered {registered['name']} v{registered['version']} ({registered['candidate']}), "
            f"test {primary}={metrics['best'].get('test/' + primary):.4f}; plots {where.plots_dir}/"
        )
        outcome[name] = {"registered": registered, "best": metrics["best"], "primary_metric": primary}
    return outcome


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
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.orchestration.flow", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "-S",
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a param, e.g. datasets.digits.train.epochs=5",
    )
    parser.add_argument(
        "--dataset", action="append", default=None, metavar="NAME", help="run only this dataset's stages (repeatable)"
    )
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
        print(
            f"  {name:<10} {reg['name']} v{reg['version']} ({reg['candidate']}): "
            f"test {primary} {done['best']['test/' + primary]:.4f}"
            f"   plots: {DatasetPaths(name).plots_dir}/"
        )
    print("Metrics: dvc metrics show   Plots: dvc plots show (or the PNGs above)   Models: data/registry/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
