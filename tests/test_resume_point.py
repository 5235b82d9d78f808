"""Local mode's resume point (Ray Train keeps a local-mode checkpoint in memory only): the stage writes it under
the run's storage every epoch, checkpoint before progress, and a re-run reads back exactly the last one written."""

from pathlib import Path

from s3_server import moto_s3, s3_env  # noqa: F401  (fixtures)

from pipelines.training import store
from pipelines.training.progress import LIGHTNING_CKPT, RESUME_DIR, save_resume_point, stored_resume_point


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
    assert kept == [ckpt.name, "progress.json"], kept

    # Between candidates: one done, none in flight, no checkpoint.
    saved(tmp_path, run, None, {"ds/a": {"status": "finished"}}, None)
    assert stored_resume_point(run) == ({"ds/a": {"status": "finished"}}, None, None)
    assert [p.name for p in (tmp_path / "storage" / "run" / RESUME_DIR).iterdir()] == ["progress.json"]


def test_a_resume_point_on_s3_reads_back_through_a_local_copy(tmp_path, s3_env):  # noqa: F811
    storage = s3_env.rsplit("/", 1)[0] + "/resume-test"
    run = store.run_uri(storage, "run")
    saved(tmp_path, run, b"weights", {"ds/a": {"status": "finished"}}, "ds/b")
    finished, current, ckpt = stored_resume_point(run)
    assert finished == {"ds/a": {"status": "finished"}} and current == "ds/b"
    assert ckpt.exists() and ckpt.read_bytes() == b"weights"
    store.delete_dir(run)
    assert stored_resume_point(run) == ({}, None, None)
