"""The Prefect tasks that run DVC: one dvc.yaml stage (`dvc repro --single-item`), and pull/push.

A stage runs in its own process group; a train stage that uses Ray Train workers joins the flow run's one Ray
instance (one that trains in its own process, local mode, needs none). Split
from flow.py, which strings these tasks into the run (its datasets' chains side by side).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

from prefect import get_run_logger, task
from prefect.tasks import exponential_backoff

from pipelines import integrity, workspace
from pipelines.errors import DamagedData
from pipelines.orchestration import lanes, ray_head, stage_output
from pipelines.orchestration.dvc_ops import default_remote, dvc_bin, remote_url, stage_env
from pipelines.orchestration.failures import remote_failure, stage_failure
from pipelines.orchestration.failures import retry_transient as _retry_transient

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
# Retries of a stage that failed for a reason outside it wait 10 s, 20 s, 40 s (+ jitter).
RETRY_BASE_SECONDS = float(os.environ.get("DL_PIPELINE_RETRY_BASE_SECONDS", "10"))
RETRIES = int(os.environ.get("DL_PIPELINE_RETRIES", "3"))  # more on flaky infrastructure, 0 to fail at once
# A stopped stage gets this long to exit on SIGTERM before SIGKILL: a run stops within seconds.
STOP_GRACE_SECONDS = 3.0
OUTPUT_KEPT = 400  # lines of a stage's output searched for the root cause of a failure
_run_ray: list[ray_head.RunRay] = []  # the current flow run's Ray (its train stages join it)
_stopping = lanes.STOPPING  # the current flow run is stopping: no stage starts, none is retried


def _ray_env(stage: str, workdir: str) -> dict[str, str]:
    """A train stage joins the run's Ray instance, started for the first train stage that needs one."""
    if not stage.startswith("train@") or not _run_ray:
        return {}
    run = _run_ray[-1]
    env = run.env_for(stage.partition("@")[2])
    lock = workspace.held(workdir)
    if lock and run.head and run.head.proc and lock.record.get("ray_pgid") != run.head.proc.pid:
        lock.note(ray_pgid=run.head.proc.pid, ray_temp_dir=run.head.temp_dir)  # for the crash hook
    return env


def _retry_unless_stopping(task, task_run, state) -> bool:
    """A transient failure is retried, unless the run is stopping (its stages were stopped on purpose)."""
    return not _stopping.is_set() and _retry_transient(task, task_run, state)


def _retry_unless_damaged(task, task_run, state) -> bool:
    """A remote's failure is retried; damaged data in the cache is not (another attempt finds the same bytes)."""
    err = state.data if isinstance(state.data, BaseException) else state.result(raise_on_failure=False)
    return not isinstance(err, DamagedData)


# Both tasks retry a failure from outside them (a remote, a busy lock) with backoff.
RETRIED = {
    "retries": RETRIES,
    "retry_delay_seconds": exponential_backoff(backoff_factor=RETRY_BASE_SECONDS),
    "retry_jitter_factor": 0.2,
}


@task(name="dvc-stage", task_run_name="{stage}", retry_condition_fn=_retry_unless_stopping, **RETRIED)
def run_stage(stage: str, workdir: str, force: bool = False) -> dict:
    """Run one dvc.yaml stage; DVC skips it when its deps, params and outs are unchanged (unless `force`).

    `dvc repro` runs in its own process group (with the stage's command); if this run is
    cancelled or interrupted (Ctrl-C, SIGTERM) the whole group is stopped, so no training
    outlives its run. A train stage that needs Ray joins the run's one Ray instance.
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
    progress = stage_output.TrainProgress(stage) if stage.startswith("train@") else None
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            line = ANSI_ESCAPE.sub("", line).rstrip()
            if not line:
                continue
            skipped |= "didn't change, skipping" in line
            output.append(line)
            del output[:-OUTPUT_KEPT]
            (logger.debug if stage_output.is_chatter(line) else logger.info)(line)
            if progress is not None:
                progress.see(line)
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
    if progress is not None:
        progress.finish()
    return {
        "stage": stage,
        "skipped": skipped,
        "seconds": round(time.perf_counter() - started, 2),
        "started_at": round(time.time() - (time.perf_counter() - started), 3),  # chains overlap: when it ran
        "ended_at": round(time.time(), 3),
    }


@task(name="dvc-sync", task_run_name="dvc-{action}", retry_condition_fn=_retry_unless_damaged, **RETRIED)
def dvc_sync(action: str, workdir: str, stages: list[str]) -> str:
    """`dvc pull` what the chosen stages' recorded outputs need before a run, `dvc push` what they made after.

    A remote (S3, a shared directory) is infrastructure: a failure is retried with backoff, then
    raised as RemoteUnavailable (exit 75) naming the remote and DVC's error line.
    Pull uses --allow-missing: outputs never pushed are simply recomputed by the stages.
    Before a push, the cache objects of the stages' outputs are hashed (DVC trusts a read-only object):
    a damaged one stops the run (DamagedData, not retried) and nothing is pushed.
    """
    from prefect.runtime import task_run

    logger = get_run_logger()
    if action == "push":
        started = time.perf_counter()
        checked = integrity.verify_cache(stages, Path(workdir))
        logger.info(f"{checked} cache objects match dvc.lock ({time.perf_counter() - started:.2f} s)")
    cmd = [dvc_bin(), action, *(["--allow-missing"] if action == "pull" else []), *stages]
    proc = subprocess.run(cmd, cwd=workdir, env=stage_env(), capture_output=True, text=True)
    output = ANSI_ESCAPE.sub("", proc.stdout + proc.stderr).strip()
    for line in output.splitlines()[-15:]:
        logger.info(line)
    if proc.returncode != 0:
        remote = default_remote(workdir) or "?"
        raise remote_failure(action, remote, remote_url(workdir, remote), task_run.run_count, output)
    return output.splitlines()[-1] if output else ""
