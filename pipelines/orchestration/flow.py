"""The main job: a Prefect flow whose tasks run the stages of dvc.yaml.

The flow does not re-declare the graph: it asks DVC for the stage order and
runs `dvc repro --single-item <stage>` for each, so a flow run and `dvc repro`
are the same computation and leave the same dvc.lock (and an unchanged stage
is skipped by DVC in both).

    python -m pipelines.orchestration.flow                                  # every dataset in params.yaml
    python -m pipelines.orchestration.flow --dataset digits                 # one dataset's chain only
    python -m pipelines.orchestration.flow -S datasets.digits.train.epochs=5
        # validated override, written to params.yaml

The command line is pipelines/orchestration/cli.py. From the Prefect UI: `make serve`
(pipelines/orchestration/serve.py) serves this flow's deployments.
A run holds its workspace for its whole length (pipelines/workspace.py), so runs
that share one take turns; within a run the datasets' chains run side by side, one
per core on a local CPU-only machine (`parallel`, pipelines/orchestration/lanes.py);
each dataset's results are published as artifacts on the run's page
(pipelines/orchestration/artifacts.py).
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # the command line validates before it pays for importing Prefect (cli.py)
    from pipelines.orchestration.cli import main

    sys.exit(main())

import contextlib
import os
import re
import subprocess
import threading
import time
from pathlib import Path

# No network here and none needed: keep Prefect's and DVC's telemetry off.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

from prefect import flow, get_run_logger, task
from prefect.tasks import exponential_backoff

from pipelines import paths, workspace
from pipelines.atomic import read_json
from pipelines.config import PipelineParams, load_params
from pipelines.evaluation.comparison import unbeaten, unbeaten_message
from pipelines.handoffs import upgrade_report
from pipelines.orchestration import lanes, ray_head
from pipelines.orchestration.artifacts import publish_dataset, publish_profile, publish_summary
from pipelines.orchestration.dvc_ops import (
    default_remote,
    dvc_bin,
    recorded_stages,
    save_experiment,
    stage_env,
    stage_order,
)
from pipelines.orchestration.failures import StageFailed, stage_failure
from pipelines.orchestration.failures import retry_transient as _retry_transient
from pipelines.orchestration.hooks import FLOW_NAME, run_name, stop_running_stage
from pipelines.orchestration.overrides import PREVIOUS_PARAMS, parse_overrides, write_params
from pipelines.paths import DatasetPaths

# Names callers and tests import from here (they moved to the modules above).
__all__ = [
    "FLOW_NAME",
    "RETRY_BASE_SECONDS",
    "StageFailed",
    "_retry_transient",
    "default_remote",
    "parse_overrides",
    "recorded_stages",
    "run_name",
    "run_stage",
    "stage_order",
    "training_pipeline",
]

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
# Retries of a stage that failed for a reason outside it wait 10 s, 20 s, 40 s (+ jitter).
RETRY_BASE_SECONDS = float(os.environ.get("DL_PIPELINE_RETRY_BASE_SECONDS", "10"))
# A stopped stage gets this long to exit on SIGTERM before SIGKILL: a run stops within seconds.
STOP_GRACE_SECONDS = 3.0
OUTPUT_KEPT = 400  # lines of a stage's output searched for the root cause of a failure
_run_ray: list[ray_head.RunRay] = []  # the current flow run's Ray (its train stages join it)
_stopping = lanes.STOPPING  # the current flow run is stopping: no stage starts, none is retried


def _ray_env(stage: str, workdir: str) -> dict[str, str]:
    """A train stage joins the run's Ray instance, started for the first train stage."""
    if not stage.startswith("train@") or not _run_ray:
        return {}
    run = _run_ray[-1]
    env = run.env()
    lock = workspace.held(workdir)
    if lock and run.head and run.head.proc and lock.record.get("ray_pgid") != run.head.proc.pid:
        lock.note(ray_pgid=run.head.proc.pid, ray_temp_dir=run.head.temp_dir)  # for the crash hook
    return env


def _retry_unless_stopping(task, task_run, state) -> bool:
    """A transient failure is retried, unless the run is stopping (its stages were stopped on purpose)."""
    return not _stopping.is_set() and _retry_transient(task, task_run, state)


@task(
    name="dvc-stage",
    task_run_name="{stage}",
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=RETRY_BASE_SECONDS),
    retry_jitter_factor=0.2,
    retry_condition_fn=_retry_unless_stopping,
)
def run_stage(stage: str, workdir: str, force: bool = False) -> dict:
    """Run one dvc.yaml stage; DVC skips it when its deps, params and outs are unchanged (unless `force`).

    `dvc repro` runs in its own process group (with the stage's command); if this run is
    cancelled or interrupted (Ctrl-C, SIGTERM) the whole group is stopped, so no training
    outlives its run. A train stage joins the run's one Ray instance.
    """
    logger = get_run_logger()
    if _stopping.is_set():  # e.g. a retry that was waiting when the run was told to stop
        raise RuntimeError(f"{stage}: not started, the run is stopping")
    started = time.perf_counter()
    lock = workspace.held(workdir)
    env = stage_env(_ray_env(stage, workdir))
    if lock:
        env[workspace.TOKEN_ENV] = lock.record["token"]  # this run's stages may use the workspace it holds
    # --wait-for-lock: the other chains' `dvc repro` hold DVC's repository lock for moments at a time.
    proc = subprocess.Popen(
        [dvc_bin(), "--wait-for-lock", "repro", "--single-item", *(["--force"] if force else []), stage],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
        start_new_session=True,
    )
    if lock:
        lock.stage_started(stage, proc.pid)
    if _stopping.is_set():  # the stop read the running stages before this one was noted: stop it here
        workspace.stop_process_group(proc.pid, grace_seconds=STOP_GRACE_SECONDS, reap=proc.poll)
    output: list[str] = []
    skipped = False
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            line = ANSI_ESCAPE.sub("", line).rstrip()
            if not line:
                continue
            skipped |= "didn't change, skipping" in line
            output.append(line)
            del output[:-OUTPUT_KEPT]
            logger.info(line)
        proc.wait()
    except BaseException as exc:  # cancellation (SIGTERM -> TerminationSignal), Ctrl-C, ...
        logger.warning(f"{stage}: stopping its processes ({type(exc).__name__})")
        if isinstance(exc, Exception):  # a failure of this task alone: the run's Ray stays for a retry
            workspace.stop_process_group(proc.pid, grace_seconds=STOP_GRACE_SECONDS, reap=proc.poll)
        else:  # the run is ending: its stage and its Ray instance stop together, within one grace period
            ray_head.stop_all((proc.pid,), grace_seconds=STOP_GRACE_SECONDS, reap=proc.poll)
        raise
    finally:
        if lock:
            lock.stage_ended(stage)
    if proc.returncode != 0:
        raise stage_failure(stage, proc.returncode, output)
    if _stopping.is_set():  # stopped from another thread: its exit status may have been collected there
        raise RuntimeError(f"{stage}: stopped, the run is stopping")
    return {
        "stage": stage,
        "skipped": skipped,
        "seconds": round(time.perf_counter() - started, 2),
        "started_at": round(time.time() - (time.perf_counter() - started), 3),  # chains overlap: when it ran
        "ended_at": round(time.time(), 3),
    }


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
    cmd = [dvc_bin(), action, *(["--allow-missing"] if action == "pull" else []), *stages]
    proc = subprocess.run(cmd, cwd=workdir, env=stage_env(), capture_output=True, text=True)
    output = ANSI_ESCAPE.sub("", proc.stdout + proc.stderr).strip()
    for line in output.splitlines()[-15:]:
        logger.info(line)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc {action} failed (exit {proc.returncode}): {output.splitlines()[-1] if output else ''}")
    return output.splitlines()[-1] if output else ""


@task(name="artifacts", task_run_name="artifacts@{dataset}")
def publish_artifacts(dataset: str, workdir: str, registry: str, reused: bool = False) -> dict[str, str]:
    """The dataset's metrics table, plots, registered model and checkpoint link, on the run's page."""
    return publish_dataset(workdir, dataset, registry, reused=reused)


@task(name="profile", task_run_name="profile@{dataset}")
def publish_profile_artifact(dataset: str, workdir: str) -> str | None:
    """A table's data profile (column types, gaps, distinct values, ranges) on the run's page."""
    return publish_profile(workdir, dataset)


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
    parallel: int | None = None,
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
        parallel: How many datasets' chains run at once (empty: one per core on a local
            CPU-only machine, one at a time on a cluster or with GPUs). Side by side, each
            train stage's `num_workers: auto` holds its share of the cores.

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
        elif write_params(params, root):
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
        chains = lanes.chains_of(stages)
        lane_count = lanes.lane_count(parallel, len(chains))
        if lane_count > 1:
            logger.info(f"{len(chains)} datasets, {lane_count} at a time (parallel={parallel or 'auto'})")
        run_ray = ray_head.RunRay(train_cpus=lanes.cpu_share(lane_count) if lane_count > 1 else None)
        _run_ray.append(run_ray)
        _stopping.clear()
        results = _run_chains(root, chains, lane_count, params, run_ray, refresh)
        ray_start_s = run_ray.start_seconds
        outcome = _outcome(root, chosen, logger)
        publish_summary(root, chosen)
        if remote:
            dvc_sync("push", str(root), stages)
        if save_experiment_as:
            logger.info(f"saved as DVC experiment {save_experiment(str(root), save_experiment_as)}")
    return {"stages": results, "datasets": outcome, "ray_start_s": round(ray_start_s, 2)}


def _run_chains(
    root: Path,
    chains: list[list[str]],
    lane_count: int,
    params: PipelineParams,
    run_ray: ray_head.RunRay,
    refresh: bool,
) -> list[dict]:
    """Every chain's stages (side by side up to `lane_count`), with the run's one Ray instance for its train stages.

    Ray starts in the background once a chain has new data (its train stage will run), else when a train stage
    needs it; it stops in the background as soon as the run's last train stage is done, and however the run ends.
    """
    results: dict[str, dict] = {}
    trains_left = [sum(stage.startswith("train@") for chain in chains for stage in chain)]
    counting = threading.Lock()

    def one(stage: str) -> None:
        step, _, dataset = stage.partition("@")
        try:
            results[stage] = run_stage(stage, str(root), force=refresh and step == "ingest")
        finally:
            if step == "train":
                with counting:
                    trains_left[0] -= 1
                    if trains_left[0] == 0:
                        run_ray.close_soon()  # the rest of the run needs no Ray
        if step in ("ingest", "prepare") and not results[stage]["skipped"] and trains_left[0]:
            run_ray.start_soon()  # new data: a train stage follows; Ray starts while this chain prepares
        if step == "ingest" and (root / paths.DatasetPaths(dataset).raw_profile).exists():
            publish_profile_artifact(dataset, str(root))
        if step == "register":
            publish_artifacts(dataset, str(root), params.register.registry, reused=results[stage]["skipped"])

    def stop_running() -> None:  # Ctrl-C, SIGTERM or Prefect's cancellation reached the flow's thread
        lock = workspace.held(root)
        running = dict(lock.record.get("stages", {})) if lock else {}
        with contextlib.suppress(Exception):  # a log line is never worth failing the stop for
            logger = get_run_logger()
            for stage in running:
                logger.warning(f"{stage}: stopping its processes (the run is stopping)")
        ray_head.stop_all(tuple(int(pgid) for pgid in running.values()), grace_seconds=STOP_GRACE_SECONDS)

    try:
        lanes.run_chains(chains, lane_count, one, _stopping, on_stop=stop_running)
    finally:
        run_ray.close()
        _run_ray.remove(run_ray)
        lock = workspace.held(root)
        if lock and lock.record.get("ray_pgid"):
            lock.note(ray_pgid=None, ray_temp_dir=None)  # gone: the crash hook must not signal a reused pgid
    order = [stage for chain in chains for stage in chain]
    return sorted(results.values(), key=lambda r: order.index(r["stage"]))


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
        for entry in unbeaten(metrics):  # said on the run's own log too, not only in the evaluate stage's
            logger.warning(f"{name}: {unbeaten_message(entry)}")
        outcome[name] = {"registered": registered, "best": metrics["best"], "primary_metric": primary}
    return outcome
