"""The flow's dataset chains side by side (pipelines/orchestration/lanes.py): order, overlap, fail-fast, stop."""

from __future__ import annotations

import _thread
import signal
import threading
import time

import pytest

from pipelines.orchestration import lanes

CHAINS = [["ingest@a", "train@a", "register@a"], ["ingest@b", "train@b", "register@b"], ["ingest@c", "train@c"]]


def test_stage_order_becomes_one_chain_per_dataset():
    flat = [stage for chain in CHAINS for stage in chain]
    assert lanes.chains_of(flat) == CHAINS


def test_lane_count_one_per_core_locally_and_one_on_a_cluster(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(lanes, "has_local_gpu", lambda: False)
    monkeypatch.setattr(lanes.os, "cpu_count", lambda: 2)
    assert lanes.lane_count(None, 4) == 2
    assert lanes.lane_count(None, 1) == 1
    assert lanes.lane_count(3, 4) == 3  # asked for: wins, up to the number of chains
    assert lanes.lane_count(8, 4) == 4
    assert lanes.cpu_share(2) == 1 and lanes.cpu_share(1) == 2
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert lanes.lane_count(None, 4) == 1
    monkeypatch.delenv("RAY_ADDRESS")
    monkeypatch.setattr(lanes, "has_local_gpu", lambda: True)
    assert lanes.lane_count(None, 4) == 1


def _recorder():
    log: list[tuple[str, str, float]] = []

    def run(stage: str) -> None:
        log.append(("start", stage, time.monotonic()))
        time.sleep(0.05)
        log.append(("end", stage, time.monotonic()))

    return log, run


def test_chains_run_side_by_side_each_in_its_own_order():
    log, run = _recorder()
    lanes.run_chains(CHAINS, 2, run, threading.Event(), on_stop=lambda: None)
    started = [stage for what, stage, _ in log if what == "start"]
    assert sorted(started) == sorted(s for chain in CHAINS for s in chain)
    for chain in CHAINS:
        assert [s for s in started if s in chain] == chain
    # a and b ran at the same time: b's first stage started before a's chain ended
    a_end = max(t for what, s, t in log if what == "end" and s.endswith("@a"))
    b_start = min(t for what, s, t in log if what == "start" and s.endswith("@b"))
    assert b_start < a_end


def test_one_lane_is_one_chain_after_another():
    log, run = _recorder()
    lanes.run_chains(CHAINS, 1, run, threading.Event(), on_stop=lambda: None)
    assert [s for what, s, _ in log if what == "start"] == [s for chain in CHAINS for s in chain]


def test_a_failure_lets_running_stages_finish_starts_no_other_and_is_raised():
    finished, started = [], []
    b_running = threading.Event()

    def run(stage: str) -> None:
        started.append(stage)
        if stage == "ingest@b":
            b_running.set()
            time.sleep(0.3)  # still running when a fails
            finished.append(stage)
        if stage == "train@a":
            b_running.wait(5)
            raise RuntimeError("train@a: bad input")

    stopping = threading.Event()
    with pytest.raises(RuntimeError, match="train@a: bad input"):
        lanes.run_chains(CHAINS, 2, run, stopping, on_stop=lambda: None)
    assert stopping.is_set()
    assert finished == ["ingest@b"]  # not cut off
    assert sorted(started) == ["ingest@a", "ingest@b", "train@a"]  # nothing new after the failure


def test_a_signal_in_the_main_thread_stops_the_running_stages_and_is_raised():
    stopped = threading.Event()
    seen = []

    def run(stage: str) -> None:
        seen.append(stage)
        if stage == "train@a":
            _thread.interrupt_main()  # what Ctrl-C does: KeyboardInterrupt in the flow's thread
        stopped.wait(5)  # a stage process runs until on_stop ends it

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # whatever an earlier test installed
    try:
        with pytest.raises(KeyboardInterrupt):
            lanes.run_chains(CHAINS, 2, run, threading.Event(), on_stop=stopped.set)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert stopped.is_set()
    assert "register@a" not in seen and "ingest@c" not in seen


def test_chains_noting_their_stages_at_once_lose_none(tmp_path):
    """Every lane notes its running stage in the workspace record: concurrent updates must not drop one."""
    from pipelines import workspace

    with workspace.hold(tmp_path, {"flow_run_id": "1"}) as lock:

        def note(lane: int) -> None:
            for k in range(150):
                lock.stage_started(f"stage{k}@lane{lane}", 1000 * lane + k)
            for k in range(0, 150, 2):
                lock.stage_ended(f"stage{k}@lane{lane}")

        threads = [threading.Thread(target=note, args=(lane,)) for lane in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(lock.stage_pgids()) == 4 * 75
        assert workspace.read_record(tmp_path)["stages"] == lock.record["stages"]


def test_a_closed_run_ray_starts_no_head_again(monkeypatch):
    """A chain still running after the run's end (a straggler) must not start a new Ray head."""
    from pipelines.orchestration.ray_head import RunRay

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    run = RunRay()
    run.close()
    run.start_soon()  # ignored
    assert run.head is None
    with pytest.raises(RuntimeError, match="stopped"):
        run.env()


def test_the_flow_refuses_a_parallel_below_one_naming_it():
    """The Prefect form (and an API call) gets the same check as the command line's --parallel."""
    from prefect.exceptions import ParameterTypeError

    from pipelines.orchestration.flow import training_pipeline

    assert training_pipeline.validate_parameters({"parallel": 2})["parallel"] == 2
    with pytest.raises(ParameterTypeError, match="parallel"):
        training_pipeline.validate_parameters({"parallel": 0})
