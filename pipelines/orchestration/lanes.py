"""A run's dataset chains side by side: `lanes` chains at a time, each chain's stages in order.

Why: most of a stage is one busy core (Python start-up, imports, DVC's bookkeeping, a worker
group's start-up, evaluation), so one chain after another leaves the second core of a laptop
idle for most of a run. Two chains at a time overlap one dataset's start-up with another's
epochs. Each train stage then gets its share of the cores (`cpu_share`), so two trainings never
ask the run's Ray instance for more than it has.

DVC allows it: it unlocks its repository while a stage's command runs and locks only that stage's
deps and outs, which no two datasets' chains share (`dvc --wait-for-lock` waits for the short
moments DVC itself holds the repository lock).

No Prefect import here: pure threading, tested on its own.
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path

# This process's flow run is stopping (Ctrl-C, SIGTERM, cancel, a failed stage): no stage starts, none is
# retried, none that was stopped counts as done. Here, not in flow.py: the command line's signal handler
# sets it without importing Prefect.
STOPPING = threading.Event()
JOIN_POLL_S = 0.2  # the main thread waits in short joins: a signal's handler runs between them
STOP_WAIT_S = 30.0  # after a stop, how long the main thread waits for the lanes to see their stages end


def chains_of(stages: list[str]) -> list[list[str]]:
    """`stage_order`'s list (`<step>@<dataset>`, one dataset after another) as one chain per dataset, in order."""
    chains: dict[str, list[str]] = {}
    for stage in stages:
        chains.setdefault(stage.partition("@")[2], []).append(stage)
    return list(chains.values())


def has_local_gpu() -> bool:
    """An NVIDIA GPU on this machine (without importing torch: the flow never does)."""
    return any(Path("/dev").glob("nvidia[0-9]*"))


def lane_count(requested: int | None, chains: int) -> int:
    """How many chains run at once: `requested`, else one per core on a local CPU-only run.

    On a cluster (`RAY_ADDRESS`) or with GPUs, `auto` keeps one chain at a time: each train stage's
    `num_workers: auto` takes every GPU or node, and a second stage would wait for them.
    """
    if requested:
        return max(1, min(requested, chains))
    if os.environ.get("RAY_ADDRESS") or has_local_gpu():
        return 1
    return max(1, min(chains, os.cpu_count() or 1))


def cpu_share(lanes: int) -> int:
    """The cores one train stage's `num_workers: auto` may hold while `lanes` chains run side by side."""
    return max(1, (os.cpu_count() or 1) // lanes)


def run_chains(
    chains: list[list[str]],
    lanes: int,
    run_stage: Callable[[str], object],
    stopping: threading.Event,
    on_stop: Callable[[], None],
) -> None:
    """Run every chain, `lanes` at a time, calling `run_stage(stage)` for each stage in its chain's order.

    The first failure stops new stages from starting (in every chain); the stages already running
    finish, and then it is raised: the same fail-fast as one chain after another, with nothing cut
    off half-way. An exception in this (the main) thread — Ctrl-C, SIGTERM, Prefect's cancellation —
    sets `stopping`, calls `on_stop` (which stops the running stages' processes) and is re-raised once
    the lanes have seen their stages end.
    """
    queue = deque(chains)
    taken = threading.Lock()
    failures: list[BaseException] = []

    def lane() -> None:
        while not stopping.is_set():
            with taken:
                if not queue:
                    return
                chain = queue.popleft()
            for stage in chain:
                if stopping.is_set():
                    return
                try:
                    run_stage(stage)
                except BaseException as exc:  # noqa: BLE001  (handed to the main thread, raised there)
                    failures.append(exc)
                    stopping.set()
                    return

    # Each lane runs in a copy of this thread's context: Prefect's flow run context goes with it.
    threads = [
        threading.Thread(target=contextvars.copy_context().run, args=(lane,), name=f"chain-lane-{i}", daemon=True)
        for i in range(max(1, lanes))
    ]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(JOIN_POLL_S)
    except BaseException:
        stopping.set()
        on_stop()
        for thread in threads:
            thread.join(STOP_WAIT_S)
        raise
    if failures:
        raise failures[0]
