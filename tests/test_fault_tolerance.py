"""Training survives failures: a killed worker process is replaced and training resumes from the last checkpoint."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def train_worker_pids(storage: Path, run: str) -> list[int]:
    """This run's live Ray Train worker processes, from the placement records each worker writes at start
    (not every RayTrainWorker on the machine: another Ray instance's workers are none of this test's business)."""
    from pipelines.training import ray_launcher

    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    alive = {int(line.split()[0]) for line in out.splitlines() if "RayTrainWorker" in line}
    records = ray_launcher._read_placement(ray_launcher._placement_uri(str(storage), run))
    return [r["pid"] for r in records if r["pid"] in alive]


def checkpoints(storage: Path, run: str) -> list[Path]:
    return sorted((storage / run).glob("checkpoint_*"))


def digits_job(epochs: int = 10, prepared: bool = False):
    """The default CNN on the digits, prepared in the current directory, as the train stage builds it."""
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
    return make_job("digits", "cnn-wide", params.train.candidates["cnn-wide"], params, PipelineParams().train, meta)


def fit_digits(storage: str, run: str, prepared: bool = True):
    from pipelines.training import ray_launcher

    ray_launcher.ensure_ray()
    try:
        return ray_launcher.fit(
            digits_job(prepared=prepared), ray_launcher.Scaling(num_workers=2), storage, run, keep=2
        )
    finally:
        ray_launcher.shutdown_ray()


def test_a_killed_worker_is_replaced_and_training_resumes_from_the_last_checkpoint(in_tmp):
    from pipelines.training import ray_launcher

    job = digits_job()
    storage, run = in_tmp / "ray", "kill-test"

    ray_launcher.ensure_ray()
    outcome: dict = {}
    fitting = threading.Thread(
        target=lambda: outcome.update(
            result=ray_launcher.fit(job, ray_launcher.Scaling(num_workers=2), str(storage), run, keep=2)
        )
    )
    fitting.start()
    try:
        seen: set[str] = set()  # one checkpoint per epoch; Ray deletes all but the top-k, so remember names
        deadline = time.time() + 300
        while len(seen) < 3 and fitting.is_alive() and time.time() < deadline:
            seen.update(p.name for p in checkpoints(storage, run))
            time.sleep(0.1)
        victims = train_worker_pids(storage, run)
        assert victims, "no Ray Train worker process found"
        os.kill(victims[-1], signal.SIGKILL)  # a real worker process, by pid, mid-training
        last_saved_epoch = len(seen) - 1
        fitting.join(timeout=400)
        assert not fitting.is_alive(), "training did not finish after the worker was killed"
    finally:
        ray_launcher.shutdown_ray()

    history = outcome["result"].history
    epochs = [int(row["epoch"]) for row in history]
    assert epochs == list(range(10))  # every epoch once: nothing repeated, nothing skipped
    pids = [int(row["rank0_pid"]) for row in history]
    restarted = next(i for i, pid in enumerate(pids) if pid != pids[0])  # first epoch of the new worker group
    # The new workers resumed from the latest checkpoint Ray had committed: the newest one seen on disk
    # may still have been in the middle of its report when the worker died, so the resume point is that
    # epoch or the one before; only the epochs since that checkpoint were trained again.
    assert last_saved_epoch <= restarted <= last_saved_epoch + 2, (restarted, last_saved_epoch)
    assert len(set(pids)) == 2
    assert outcome["result"].best_metrics["val/accuracy"] > 0.9


def test_a_run_whose_driver_died_resumes_when_rerun_with_the_same_name(in_tmp):
    from tests.conftest import ROOT, project_env

    digits_job()  # ingest + prepare here
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
    seen: set[str] = set()
    deadline = time.time() + 300
    while len(seen) < 3 and driver.poll() is None and time.time() < deadline:
        seen.update(p.name for p in checkpoints(storage, run))
        time.sleep(0.1)
    assert driver.poll() is None, "the first driver finished before it could be killed"
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and everything it started: its local Ray instance too
    driver.wait()

    result = fit_digits(str(storage), run)  # a new driver, same RunConfig(name, storage_path)
    history = result.history
    assert [int(r["epoch"]) for r in history] == list(range(10))
    pids = [int(r["rank0_pid"]) for r in history]
    resumed = next(i for i, pid in enumerate(pids) if pid != pids[0])
    assert resumed >= len(seen) - 1 >= 2, (resumed, len(seen))  # epochs before the crash were not trained again
