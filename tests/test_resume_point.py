"""Local mode's resume point (Ray Train keeps a local-mode checkpoint in memory only): the stage writes it under
the run's storage every epoch, checkpoint before progress, and a re-run reads back exactly the last one written."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from s3_server import moto_s3, s3_env  # noqa: F401  (fixtures)

from pipelines.training import store
from pipelines.training.progress import (
    LIGHTNING_CKPT,
    RESUME_DIR,
    discard_resume_copy,
    save_resume_point,
    stored_resume_point,
)
from tests.conftest import ROOT


def saved(tmp_path: Path, run: str, payload: bytes | None, finished: dict, current: str | None) -> None:
    local = tmp_path / f"report-{len(list(tmp_path.iterdir()))}"
    local.mkdir()
    if payload is not None:
        (local / LIGHTNING_CKPT).write_bytes(payload)
    save_resume_point(run, local, finished, current)


def test_a_run_resumes_from_the_last_resume_point_written(tmp_path):
    run = str(tmp_path / "storage" / "run")
    assert stored_resume_point(run) == ({}, None, None)  # nothing yet: from scratch
    saved(tmp_path, run, b"epoch 1", {}, "ds/a")
    saved(tmp_path, run, b"epoch 2", {}, "ds/a")
    finished, current, ckpt = stored_resume_point(run)
    assert (finished, current, ckpt.read_bytes()) == ({}, "ds/a", b"epoch 2")
    # Only the checkpoint progress.json names is kept (one per run, not one per epoch).
    kept = sorted(p.name for p in (tmp_path / "storage" / "run" / RESUME_DIR).iterdir())
    assert len(kept) == 2 and kept[0].startswith("checkpoint-") and kept[1] == "progress.json", kept
    # What the worker got is a private copy: removing it after the fit leaves the stored point, and no folder behind.
    discard_resume_copy(ckpt)
    assert not ckpt.parent.exists()
    assert stored_resume_point(run)[2].read_bytes() == b"epoch 2"

    # Between candidates: one done, none in flight, no checkpoint.
    saved(tmp_path, run, None, {"ds/a": {"status": "finished"}}, None)
    assert stored_resume_point(run) == ({"ds/a": {"status": "finished"}}, None, None)
    assert [p.name for p in (tmp_path / "storage" / "run" / RESUME_DIR).iterdir()] == ["progress.json"]


def test_a_stale_writer_cannot_overwrite_what_a_newer_attempt_wrote(tmp_path):
    """A worker of a killed driver that trains on for a moment: its state, evictions and resume point are refused."""
    from pipelines.training.callbacks import EpochHistory
    from pipelines.training.progress import CandidateReport, Keeper
    from pipelines.training.runtime import LocalMode

    run = str(tmp_path / "storage" / "run")

    def writer(attempt: str) -> CandidateReport:
        fence = store.Fence(run, attempt)
        keep_resume = LocalMode(run, 1.0).keep_resume_point
        return CandidateReport("ds/a", 0, run, Keeper("val/loss", "min", 2), {}, EpochHistory(), keep_resume, fence)

    stale = writer(store.begin_attempt(run))
    stale.write_state("running")  # its own attempt: allowed
    saved(tmp_path, run, b"epoch 3 of the first driver", {}, "ds/a")
    newer = writer(store.begin_attempt(run))  # the re-run's driver
    newer.write_state("finished")
    save_resume_point(run, tmp_path, {"ds/a": {"status": "finished"}}, None, newer.fence)

    with pytest.raises(store.StaleAttempt, match=r"was superseded by attempt .*this worker stops without writing"):
        stale.write_state("running")
    local = tmp_path / "stale"
    local.mkdir()
    (local / LIGHTNING_CKPT).write_bytes(b"epoch 4 of the first driver")
    with pytest.raises(store.StaleAttempt):
        save_resume_point(run, local, {}, "ds/a", stale.fence)
    state = store.read_json(f"{store.candidate_uri(run, 'ds/a')}/state.json")
    assert state["status"] == "finished"
    assert stored_resume_point(run) == ({"ds/a": {"status": "finished"}}, None, None)


def test_a_worker_whose_raylet_died_writes_nothing(tmp_path):
    """A killed driver takes its local Ray instance's raylet with it; the orphaned worker (a grandchild here, its
    parent gone) is refused its next write, even though its attempt is still the run's current one."""
    run = str(tmp_path / "run")
    attempt = store.begin_attempt(run)
    result = tmp_path / "result.txt"
    orphan = f"""
import os, sys, time
from pipelines.training import store
fence = store.Fence({run!r}, {attempt!r}, raylet=os.getppid())
fence.check()  # its parent alive: allowed
print("ready", flush=True)  # the parent exits once it reads this
while os.getppid() == fence.raylet:
    time.sleep(0.01)
try:
    fence.check()
    message = "allowed"
except store.StaleAttempt as err:
    message = str(err)
open({str(result)!r} + ".part", "w").write(message)
os.replace({str(result)!r} + ".part", {str(result)!r})
"""
    parent = f"""
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", {orphan!r}], stdout=subprocess.PIPE, text=True, start_new_session=True)
assert child.stdout.readline() == "ready\\n"
"""  # exits once its child holds a fence: the child is reparented
    subprocess.run([sys.executable, "-c", parent], check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.time() + 60
    while not result.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert result.exists(), "the orphaned process wrote no result within 60 s (it failed, or never saw its parent go)"
    gone = r".*/run: this worker's raylet \(pid \d+\) is gone: it stops without writing"
    assert re.fullmatch(gone, result.read_text()), result.read_text()
    store.Fence(run, attempt, raylet=os.getppid()).check()  # a live parent: the attempt alone decides


def test_a_resume_point_on_s3_reads_back_through_a_local_copy(tmp_path, s3_env):  # noqa: F811
    storage = s3_env.rsplit("/", 1)[0] + "/resume-test"
    run = store.run_uri(storage, "run")
    saved(tmp_path, run, b"weights", {"ds/a": {"status": "finished"}}, "ds/b")
    finished, current, ckpt = stored_resume_point(run)
    assert finished == {"ds/a": {"status": "finished"}} and current == "ds/b"
    assert ckpt.exists() and ckpt.read_bytes() == b"weights"
    discard_resume_copy(ckpt)
    store.delete_dir(run)
    assert stored_resume_point(run) == ({}, None, None)


EPOCHS = 6  # the signal comes after epoch 3: the rerun resumes with epochs left to train (each costs seconds)
FIT_IN_PROCESS = """
import sys, numpy as np
from pathlib import Path
from pipelines.handoffs.splits import write_split
from pipelines.training import fit
from pipelines.training.job import Scaling, TrainJob
data, storage, epochs = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
rng = np.random.default_rng(0)
x = rng.normal(size=(20000, 32)).astype(np.float32)
y = (x[:, 0] > 0).astype(np.int64)
write_split(data / "train", x[:16000], y[:16000])
write_split(data / "val", x[16000:], y[16000:])
spec = {"family": "fnn", "input_shape": [32], "out_features": 2, "hidden": [256, 256], "activation": "relu",
    "dropout": 0.0}
job = TrainJob(candidate="ds/fnn", model_spec=spec, optim={"optimizer": "adam", "lr": 1e-3}, task="multiclass",
    loss="cce", n_classes=2, data_dir=str(data), seed=0, epochs=epochs, batch_size=32, monitor="val/loss", mode="min",
    patience=epochs)
out = fit.fit(job, Scaling(num_workers=1, cpus_per_worker=1, in_process=True), storage, "run", keep=1)
print("history", len(out.history), flush=True)
"""


@pytest.mark.slow
@pytest.mark.parametrize("signum, exit_code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_local_mode_training_with_its_exit_code_and_a_rerun_resumes(tmp_path, signum, exit_code):
    """Lightning would turn SIGTERM into exit 0 and Ctrl-C into exit 1 when it trains in the main thread."""
    command = [sys.executable, "-c", FIT_IN_PROCESS, str(tmp_path), str(tmp_path / "storage"), str(EPOCHS)]
    temp = tmp_path / "tmp"  # the runs' temporary folders: empty again after each run
    temp.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(temp)}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if f"] epoch 3/{EPOCHS}" in line:
            proc.send_signal(signum)  # to this process alone, not its group: as `kill`, `timeout` or a supervisor
            break
    proc.stdout.read()
    assert proc.wait(timeout=60) == exit_code, "".join(lines)[-3000:]
    _, current, ckpt = stored_resume_point(store.run_uri(str(tmp_path / "storage"), "run"))
    assert current == "ds/fnn" and ckpt is not None
    discard_resume_copy(ckpt)

    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    trained = [int(n) for n in re.findall(rf"\] epoch (\d+)/{EPOCHS}", again.stdout)]
    # Resumed after the last epoch saved before the stop (epoch 2's or 3's: the line prints before the save).
    assert trained and trained[0] >= 3 and trained[-1] == EPOCHS, trained
    assert f"history {EPOCHS}" in again.stdout  # one unbroken learning curve, the epochs before the stop included
    assert list(temp.iterdir()) == []  # the resume point's private copy is gone with the run
