"""Starting, joining and stopping Ray: the one place that knows which Ray instance a process uses.

A flow run starts one local Ray head and exports RAY_ADDRESS (plus DL_PIPELINE_RAY_OWNED=1:
"the flow started this local instance") to its stages, so every train stage of the run joins
the same instance. A stage run on its own (`dvc repro`) finds no RAY_ADDRESS and starts its
own local instance, as before.
"""

from __future__ import annotations

import logging
import os
import time

# A worker's report queue holds one result, and the controller takes one per health check
# (every 2 s by default): a worker that reports again before the poll blocks until it comes.
# Every epoch reports (the resume point), so an epoch shorter than the interval is stretched to
# it: at 0.1 s, 57 tiny tabular epochs (1.2 s of training) took 6.6 s, at 0.05 s 3.9 s (digits:
# 6.6 -> 6.0 s), same epoch times; at 0.02 s the polling itself slowed the digits CNN's two-thread
# epochs by 2-3 s (BENCHMARKS.md, "Issue 13: worker-group start-up"). A slower poll also adds up
# to one interval of teardown.
RAY_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.05", "RAY_DEDUP_LOGS": "1"}
# Only on a local instance (one we start, or the flow's own): the spot-preemption watcher and
# the Prometheus metrics callbacks are cluster observability, and each fit would otherwise
# start a watcher actor (one more process importing Ray Train) and export metrics nobody
# scrapes (no dashboard here). On a cluster joined through RAY_ADDRESS, Ray's defaults stand.
LOCAL_RAY_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_TRAIN_METRICS_ENABLED": "0"}
# Set by the flow when RAY_ADDRESS names the local instance it started for the run.
OWNED_FLAG = "DL_PIPELINE_RAY_OWNED"
# Set by the flow when its datasets' chains train side by side: the cores one stage's `auto` may hold.
TRAIN_CPUS_ENV = "DL_PIPELINE_TRAIN_CPUS"


def local_instance(address: str | None) -> bool:
    """True when the Ray instance is this machine's own: started here, or started by the flow for this run."""
    return not address or os.environ.get(OWNED_FLAG) == "1"


def trains_in_process(num_workers: int | str, use_gpu: bool, address: str | None) -> bool:
    """`num_workers: auto` on this machine's own CPUs: one worker, run by Ray Train's local mode in the stage's process.

    One worker holding all the local cores is `auto`'s choice on a CPU-only machine (measured faster
    than several one-core workers: BENCHMARKS.md). Ray Train's local mode (`ScalingConfig(num_workers=0)`)
    runs that worker's training function in the calling process, with the same `ray.train` API: no
    Ray instance, controller or worker processes to start for it, which were most of a small train
    stage's wall time (BENCHMARKS.md, "Issue 13, session 7"). An explicit number of workers, GPUs, or
    a cluster joined through RAY_ADDRESS keep the Ray worker group (and its restart of a lost worker).
    """
    return num_workers == "auto" and not use_gpu and local_instance(address)


def local_cpu_share() -> int:
    """The cores one train stage may use here: all, or its share while the run's chains train side by side."""
    cores = os.cpu_count() or 1
    return max(1, min(int(os.environ.get(TRAIN_CPUS_ENV) or 0) or cores, cores))


def ray_env(address: str | None) -> dict[str, str]:
    """The Ray settings for this instance; the user's own environment wins over ours."""
    wanted = {**RAY_ENV, **(LOCAL_RAY_ENV if local_instance(address) else {})}
    return {k: os.environ.get(k, v) for k, v in wanted.items()}


def ensure_ray(address: str | None = None) -> float:
    """Start a local Ray instance, or join RAY_ADDRESS. Returns the seconds it took."""
    import ray

    if ray.is_initialized():
        return 0.0
    address = address or os.environ.get("RAY_ADDRESS") or None
    settings = ray_env(address)
    os.environ.update(settings)  # the driver's own Ray Train controller reads them from here
    started = time.perf_counter()
    ray.init(
        address=address,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=True,
        runtime_env={
            "env_vars": settings,
            "worker_process_setup_hook": "pipelines.training.ray_logging.quiet",
        },
    )
    return time.perf_counter() - started


def session() -> dict[str, str]:
    """Which Ray instance this process uses (the train summary records it: one instance per run)."""
    import ray

    ctx = ray.get_runtime_context()
    return {"gcs_address": ctx.gcs_address, "session_name": ctx.get_session_name()}


def shutdown_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()


def auto_workers(use_gpu: bool, cpus_per_worker: float) -> tuple[int, float]:
    """`train.num_workers: auto` on the Ray instance this process joined: (workers, CPUs per worker).

    - use_gpu: one worker per GPU of the instance (or cluster);
    - a local instance, CPU only: one worker holding all the cores, measured faster than several
      one-core workers (each extra process adds a gloo all-reduce on the same cores; BENCHMARKS.md);
      with the flow's chains side by side, this stage's share of them (TRAIN_CPUS_ENV);
    - a cluster joined through RAY_ADDRESS, CPU only: one worker per node, cpus_per_worker each.
    """
    import ray

    resources = ray.cluster_resources()
    if use_gpu:
        return max(1, int(resources.get("GPU", 0))), cpus_per_worker
    if local_instance(os.environ.get("RAY_ADDRESS")):
        # Never more than Ray was given (a worker asking for more would wait forever), nor than this
        # stage's share while other chains of the run train beside it.
        return 1, float(max(1, min(local_cpu_share(), int(resources.get("CPU", 1)))))
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) >= cpus_per_worker]
    return max(1, len(nodes)), cpus_per_worker
