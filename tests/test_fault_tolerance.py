"""Training survives failures: all candidates of a stage train in one worker group; a killed worker is replaced
(or a killed driver re-run) and training resumes from the last checkpoint: finished candidates are not trained
again, the one in flight resumes at its last saved epoch."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

FIRST, SECOND = "digits/cnn-narrow", "digits/cnn-wide"


def train_worker_pids(storage: Path, run: str, candidate: str) -> list[int]:
    """This run's live Ray Train worker processes, from the placement records each worker writes when it starts a
    candidate (not every RayTrainWorker on the machine: another Ray instance's workers are none of this test's
    business)."""
    from pipelines.training.fit import placement_records

    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    alive = {int(line.split()[0]) for line in out.splitlines() if "RayTrainWorker" in line}
    return [r["pid"] for r in placement_records(str(storage), run, candidate) if r["pid"] in alive]


def epochs_done(storage: Path, run: str, candidate: str) -> int:
    """Epochs of `candidate` the workers have written to the run's storage so far."""
    from pipelines.training import store

    state = store.read_json(f"{store.candidate_uri(store.run_uri(str(storage), run), candidate)}/state.json", {})
    return len(state.get("history", []))


def digits_job(epochs: int = 10, prepared: bool = False, candidate: str = "cnn-wide"):
    """A default CNN on the digits, prepared in the current directory, as the train stage builds it."""
    from pipelines.atomic import read_json
    from pipelines.config import PipelineParams
    from pipelines.paths import DatasetPaths
    from pipelines.stages.ingest import ingest
    from pipelines.stages.prepare import prepare
    from pipelines.stages.train import make_job

    params = PipelineParams().datasets["digits"].model_copy(deep=True)
    params.train.epochs = epochs
    params.train.early_stopping.patience = 100
    if not prepared:
        ingest("digits", params)
        prepare("digits", params)
    meta = read_json(DatasetPaths("digits").prepared_meta)
    return make_job("digits", candidate, params.train.candidates[candidate], params, PipelineParams().train, meta)


def digits_jobs(prepared: bool = True) -> list:
    """Two candidates for one worker group: a short first one (3 epochs), then 10 epochs of the wide CNN."""
    return [digits_job(3, prepared, "cnn-narrow"), digits_job(10, True, "cnn-wide")]


def fit_digits(storage: str, run: str, prepared: bool = True) -> dict:
    from pipelines.training.cluster import ensure_ray, shutdown_ray
    from pipelines.training.fit import fit_candidates
    from pipelines.training.job import Scaling

    ensure_ray()
    try:
        return fit_candidates(digits_jobs(prepared), Scaling(num_workers=2), storage, run, keep=2)
    finally:
        shutdown_ray()


def wait_for_second_candidate(storage: Path, run: str, alive, epochs: int = 3) -> int:
    deadline = time.time() + 300
    while epochs_done(storage, run, SECOND) < epochs and alive() and time.time() < deadline:
        time.sleep(0.1)
    return epochs_done(storage, run, SECOND)


def assert_first_trained_once_second_resumed(outcomes: dict, saved: int, exact: bool = True) -> None:
    first, second = outcomes[FIRST].history, outcomes[SECOND].history
    assert [int(r["epoch"]) for r in first] == [0, 1, 2]
    assert [int(r["epoch"]) for r in second] == list(range(10))  # every epoch once: nothing repeated, nothing skipped
    original = int(first[0]["rank0_pid"])
    # The first candidate was trained by the first worker group only, and not again after the failure.
    assert {int(r["rank0_pid"]) for r in first} == {original}
    pids = [int(r["rank0_pid"]) for r in second]
    assert pids[0] == original  # the second candidate started in the same worker group
    restarted = next(i for i, pid in enumerate(pids) if pid != original)  # first epoch of the new worker group
    # The new workers resumed from the latest checkpoint Ray had committed: the state written for the last epoch
    # seen may be one report ahead of it, so the resume point is that epoch or the one before; only the epochs
    # since that checkpoint were trained again (fewer than from scratch).
    # (After a killed driver, a write its orphaned workers had begun may still land: only a lower bound. They write
    # nothing after that: store.Fence refuses a worker whose raylet died. Without it they trained on for ~1.5 s, and
    # a fast candidate could finish, so the re-run found nothing to resume; seen once in a full suite, 2026-12-04.)
    last_saved_epoch = saved - 1
    assert last_saved_epoch <= restarted, (restarted, last_saved_epoch)
    assert restarted <= last_saved_epoch + 2 or not exact, (restarted, last_saved_epoch)
    assert restarted >= 2
    assert len(set(pids)) == 2
    assert outcomes[SECOND].best_metrics["val/accuracy"] > 0.9


def test_a_killed_worker_is_replaced_and_training_resumes_from_the_last_checkpoint(in_tmp):
    from pipelines.training.cluster import ensure_ray, shutdown_ray
    from pipelines.training.fit import fit_candidates
    from pipelines.training.job import Scaling

    jobs = digits_jobs(prepared=False)
    storage, run = in_tmp / "ray", "kill-test"

    ensure_ray()
    outcome: dict = {}
    fitting = threading.Thread(
        target=lambda: outcome.update(result=fit_candidates(jobs, Scaling(num_workers=2), str(storage), run, keep=2))
    )
    fitting.start()
    try:
        wait_for_second_candidate(storage, run, fitting.is_alive)
        victims = train_worker_pids(storage, run, SECOND)
        assert victims, "no Ray Train worker process found"
        saved = epochs_done(storage, run, SECOND)
        os.kill(victims[-1], signal.SIGKILL)  # a real worker process, by pid, during the second candidate
        assert 3 <= saved < 10, saved
        fitting.join(timeout=400)
        assert not fitting.is_alive(), "training did not finish after the worker was killed"
    finally:
        shutdown_ray()

    assert_first_trained_once_second_resumed(outcome["result"], saved)


def test_a_run_whose_driver_died_resumes_when_rerun_with_the_same_name(in_tmp):
    from tests.conftest import ROOT, project_env

    digits_jobs(prepared=False)  # ingest + prepare here
    storage, run = in_tmp / "ray", "driver-test"
    code = f"from tests.test_fault_tolerance import fit_digits; fit_digits({str(storage)!r}, {run!r})"
    env = {**project_env(), "PYTHONPATH": str(ROOT)}
    driver = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=in_tmp,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_second_candidate(storage, run, lambda: driver.poll() is None)
    assert driver.poll() is None, "the first driver finished before it could be killed"
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and everything it started: its local Ray instance too
    driver.wait()
    saved = epochs_done(storage, run, SECOND)
    assert 3 <= saved < 10, saved

    outcomes = fit_digits(str(storage), run)  # a new driver, same RunConfig(name, storage_path)
    assert_first_trained_once_second_resumed(outcomes, saved, exact=False)
