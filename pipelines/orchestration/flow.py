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
import threading
from pathlib import Path
from typing import Annotated

# No network here and none needed: keep Prefect's and DVC's telemetry off.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

from prefect import flow, get_run_logger, task
from prefect.states import Failed, State
from pydantic import Field

from pipelines import paths, workspace
from pipelines.atomic import read_json
from pipelines.config import PipelineParams, load_params
from pipelines.errors import DamagedData, PipelineInputError, Unavailable
from pipelines.evaluation.comparison import unbeaten, unbeaten_message
from pipelines.handoffs import upgrade_report
from pipelines.orchestration import lanes, ray_head, stage_output
from pipelines.orchestration.artifacts import (
    publish_dataset,
    publish_profile,
    publish_summary,
    registered_version_missing,
)
from pipelines.orchestration.dvc_ops import (
    default_remote,
    outputs_here,
    recorded_stages,
    save_experiment,
    stage_order,
)
from pipelines.orchestration.failures import NotPushed, RemoteUnavailable, StageFailed
from pipelines.orchestration.hooks import FLOW_NAME, run_name, stop_running_stage
from pipelines.orchestration.overrides import PREVIOUS_PARAMS, write_params
from pipelines.orchestration.stage_tasks import (
    STOP_GRACE_SECONDS,
    _run_ray,
    _stopping,
    dvc_sync,
    run_stage,
)
from pipelines.paths import DatasetPaths

# (RemoteUnavailable and NotPushed are Unavailable)
stage_output.no_tracebacks_for(StageFailed, PipelineInputError, Unavailable, DamagedData)


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
    parallel: Annotated[int, Field(ge=1)] | None = None,
) -> dict | State:
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
    replaced (`dvc remote add -d storage s3://...`). A remote that is down stops the run
    only if it needs the remote: a failed pull is a warning when every recorded output is
    here; a failed push ends the run Failed with the line "not pushed: ..." (NotPushed, exit 75),
    after its results were registered and published.
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
            _pull(root, to_pull, logger)
        elif remote:
            logger.info(f"dvc.lock records none of these stages yet: nothing to pull from remote {remote!r}")
        chains = lanes.chains_of(stages)
        lane_count = lanes.lane_count(parallel, len(chains))
        if lane_count > 1:
            logger.info(f"{len(chains)} datasets, {lane_count} at a time (parallel={parallel or 'auto'})")
        run_ray = ray_head.RunRay(
            train_cpus=lanes.cpu_share(lane_count) if lane_count > 1 else None,
            in_process=frozenset(name for name in chosen if not _train_needs_ray(params, name)),
        )
        _run_ray.append(run_ray)
        _stopping.clear()
        results = _run_chains(root, chains, lane_count, params, run_ray, refresh)
        ray_start_s = run_ray.start_seconds
        outcome = _outcome(root, chosen, params.register.registry, logger)
        publish_summary(root, chosen, params.register.registry)
        not_pushed = _push(root, stages, logger) if remote else None
        if save_experiment_as:
            logger.info(f"saved as DVC experiment {save_experiment(str(root), save_experiment_as)}")
    result = {
        "stages": results,
        "datasets": outcome,
        "ray_start_s": round(ray_start_s, 2),
        "remote": remote,
        "to_commit": stage_output.changes_to_commit(root),
    }
    if result["to_commit"]:
        logger.info(f"To keep this run in git: git add {' '.join(result['to_commit'])} && git commit")
    if not_pushed:  # the run's final state says so; the command line prints the summary, then this line
        return Failed(message=not_pushed, data=NotPushed(not_pushed, result))
    return result


def _pull(root: Path, stages: list[str], logger) -> None:
    """Pull the stages' recorded outputs; best-effort (one attempt, a warning) when all of them are here already."""
    if not outputs_here(root, stages):
        dvc_sync("pull", str(root), stages)  # retried; RemoteUnavailable (exit 75) if the remote stays down
        return
    try:
        dvc_sync.with_options(retries=0)("pull", str(root), stages)
    except RemoteUnavailable as err:
        logger.warning(f"{err}; every output these stages recorded is here, so the run goes on without the remote")


def _push(root: Path, stages: list[str], logger) -> str | None:
    """Push what the run made; if the remote stays down, the line that says so (the run's results stand)."""
    try:
        dvc_sync("push", str(root), stages)
    except RemoteUnavailable as err:
        line = f"not pushed: {err}; run `dvc push` when the remote is back"
        logger.error(line)
        return line
    return None


def _train_needs_ray(params: PipelineParams, dataset: str) -> bool:
    """Whether the dataset's train stage joins the run's Ray instance (else it trains in its own process)."""
    from pipelines.training import plan

    train = params.datasets[dataset].train
    searching = train.search is not None and train.search.enabled
    return plan.needs_ray(params.train, searching=searching, streaming=train.data_loading == "stream")


def _run_chains(
    root: Path,
    chains: list[list[str]],
    lane_count: int,
    params: PipelineParams,
    run_ray: ray_head.RunRay,
    refresh: bool,
) -> list[dict]:
    """Every chain's stages (side by side up to `lane_count`), with the run's one Ray instance for its train stages.

    Ray starts in the background once a chain whose train stage needs it has new data (that stage will run), else
    when such a stage starts; it stops in the background as soon as the run's last of them is done, and however the
    run ends. Train stages that train in their own process (`RunRay.in_process`) neither start nor wait for it.
    """
    results: dict[str, dict] = {}
    trains_left = [sum(_is_ray_train(stage, run_ray) for chain in chains for stage in chain)]
    counting = threading.Lock()

    def one(stage: str) -> None:
        step, _, dataset = stage.partition("@")
        try:
            results[stage] = run_stage(stage, str(root), force=refresh and step == "ingest")
        finally:
            if _is_ray_train(stage, run_ray):
                with counting:
                    trains_left[0] -= 1
                    if trains_left[0] == 0:
                        run_ray.close_soon()  # the rest of the run needs no Ray
        new_data = step in ("ingest", "prepare") and not results[stage]["skipped"]
        if new_data and run_ray.needs_ray(dataset) and trains_left[0]:
            run_ray.start_soon()  # this chain's train stage follows; Ray starts while the chain prepares
        if step == "ingest" and (root / paths.DatasetPaths(dataset).raw_profile).exists():
            publish_profile_artifact(dataset, str(root))
        if step == "register" and results[stage]["skipped"]:
            missing = registered_version_missing(root, dataset, params.register.registry)
            if missing:
                get_run_logger().warning(f"{stage}: {missing}; registering again")
                results[stage] = run_stage(stage, str(root), force=True)
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


def _is_ray_train(stage: str, run_ray: ray_head.RunRay) -> bool:
    step, _, dataset = stage.partition("@")
    return step == "train" and run_ray.needs_ray(dataset)


def _outcome(root: Path, chosen: list[str], registry: str, logger) -> dict:
    outcome = {}
    for name in chosen:
        where = DatasetPaths(name)
        registered = read_json(root / where.registered_file)
        metrics = upgrade_report(read_json(root / where.metrics_file))
        primary = metrics["primary_metric"]
        logger.info(
            f"{name}: registered {registered['name']} v{registered['version']} ({registered['candidate']}) "
            f"in {registry}, "
            f"test {primary}={metrics['best'].get('test/' + primary):.4f}; plots {where.plots_dir}/"
        )
        for entry in unbeaten(metrics):  # said on the run's own log too, not only in the evaluate stage's
            logger.warning(f"{name}: {unbeaten_message(entry)}")
        outcome[name] = {"registered": registered, "best": metrics["best"], "primary_metric": primary}
    return outcome
