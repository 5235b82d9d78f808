"""A damaged cache is never used or pushed (pipelines/integrity.py).

DVC trusts its state database: a file whose inode, mtime and size did not change is taken to hold the md5
dvc.lock records, and a read-only cache object to be intact. Each test damages a real cache object of a real
DVC repo in place, the way a bad disk or an edit through a hard-linked cache leaves it (one digit changed;
inode, size, mode and mtime kept; the workspace file is the same inode, DVC's `hardlink` cache type), checks
that DVC itself still says everything is up to date, and then that our checks refuse it. A damaged copy
on the remote is DVC's own `verify` (committed in .dvc/config): the pull drops it.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from pipelines.errors import DamagedData
from pipelines.integrity import verify_inputs
from tests.conftest import BIN, copy_project, local_remote_dir, project_env, run, small_params

META = Path("data/prepared/tabular/meta.json")


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def damage_in_place(path: Path) -> None:
    """Change one digit in the middle of the file; keep its inode, size, mode and mtime."""
    before = path.stat()
    data = bytearray(path.read_bytes())
    i = next(i for i in range(len(data) // 2, len(data)) if chr(data[i]).isdigit())
    data[i] = ord("3") if data[i] != ord("3") else ord("7")
    os.chmod(path, stat.S_IMODE(before.st_mode) | stat.S_IWUSR)
    with open(path, "r+b") as f:  # in place: the same inode, so every hard link to it changes too
        f.write(data)
    os.chmod(path, stat.S_IMODE(before.st_mode))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)


def prepared_with_a_damaged_meta(tmp_path: Path) -> tuple[Path, str, str, Path]:
    """A project whose prepare@tabular ran, then meta.json's cache object damaged: (project, good, bad, object)."""
    env, dvc = project_env(), str(BIN / "dvc")
    project = copy_project(tmp_path / "p", small_params(("tabular",)))
    run(project, dvc, "config", "--local", "cache.type", "hardlink", env=env)
    run(project, dvc, "repro", "prepare@tabular", env=env)
    good = md5(project / META)
    obj = project / ".dvc/cache/files/md5" / good[:2] / good[2:]
    assert obj.stat().st_ino == (project / META).stat().st_ino  # the workspace file is the cache object
    damage_in_place(obj)
    bad = md5(project / META)
    assert bad != good
    # DVC itself sees nothing: same inode, size and mtime, and a read-only cache object.
    assert "Data and pipelines are up to date" in run(project, dvc, "status", "prepare@tabular", env=env)
    return project, good, bad, obj


def test_a_stage_refuses_an_input_restored_from_a_damaged_cache_object(tmp_path):
    env, dvc = project_env(), str(BIN / "dvc")
    project, good, bad, obj = prepared_with_a_damaged_meta(tmp_path)

    proc = subprocess.run(
        [dvc, "repro", "train@tabular"], cwd=project, env=env, capture_output=True, text=True, timeout=600
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "exited with 1" in out, out
    error = next(line for line in out.splitlines() if line.startswith("error: "))
    assert error.startswith(
        f"error: {META}: damaged: md5 of its bytes is {bad}, dvc.lock records {good} for prepare@tabular's output"
    ), error
    assert f"its cache object {obj} is damaged too" in error and "dvc pull prepare@tabular" in error, error
    assert "Traceback" not in out and not (project / "data/train/tabular").exists()  # nothing trained on it

    # The stage run by hand says the same, with exit 1.
    proc = subprocess.run(
        [str(BIN / "python"), "-m", "pipelines.stages.train", "tabular"],
        cwd=project,
        env={**env, "PYTHONPATH": str(project)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and proc.stderr.strip() == error, proc.stderr

    # The recovery the message names: remove the object and the file, remake them; the bytes check out again.
    obj.unlink()
    (project / META).unlink()
    run(project, dvc, "repro", "prepare@tabular", env=env)
    assert md5(project / META) == good
    verify_inputs([META.parent], project)

    # A copied workspace file damaged, its cache object intact (DVC's `copy` cache type): `dvc checkout` restores it.
    run(project, dvc, "config", "--local", "cache.type", "copy", env=env)
    run(project, dvc, "checkout", "--relink", str(META.parent), env=env)
    assert obj.stat().st_ino != (project / META).stat().st_ino
    damage_in_place(project / META)
    with pytest.raises(DamagedData) as err:
        verify_inputs([META.parent], project)
    assert str(err.value).startswith(f"{META}: damaged: md5 of its bytes is {bad}, dvc.lock records {good}")
    assert str(err.value).endswith(
        f"remove it and run `dvc checkout {META.parent}` (or `dvc pull prepare@tabular`); "
        "`dvc commit prepare@tabular` instead if it was changed on purpose"
    )
    (project / META).unlink()
    run(project, dvc, "checkout", str(META.parent), env=env)
    verify_inputs([META.parent], project)


@pytest.mark.slow
def test_the_flow_pushes_no_damaged_cache_object_and_pulls_none(tmp_path, prefect_api):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from pipelines.orchestration.stage_tasks import dvc_sync

    project, good, bad, obj = prepared_with_a_damaged_meta(tmp_path)
    remote = local_remote_dir(project)

    @flow
    def push(workdir: str) -> str:
        return dvc_sync("push", workdir, ["ingest@tabular", "prepare@tabular"])

    state = push(str(project), return_state=True)
    assert state.is_failed()
    with pytest.raises(DamagedData) as err:
        state.result()
    message = str(err.value)
    assert message.startswith(f"{META}: its cache object {obj} is damaged (md5 of its bytes {bad}"), message
    assert f"dvc.lock records {good} for prepare@tabular): not pushed" in message
    assert not remote.exists() or not any(p.is_file() for p in remote.rglob("*"))  # nothing pushed at all
    with get_client(sync_client=True) as client:
        (task_run,) = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        )
    assert task_run.run_count == 1  # damaged data is not retried

    # With the object remade, the same push goes through.
    obj.unlink()
    (project / META).unlink()
    run(project, str(BIN / "dvc"), "repro", "prepare@tabular", env=project_env())
    assert push(str(project)).strip()
    pushed = remote / "files/md5" / good[:2] / good[2:]
    assert json.loads(pushed.read_text())["dataset"] == "tabular"

    # The remote's copy damaged: the committed remote's `verify = true` makes DVC hash what it fetches, so the
    # flow's `dvc pull --allow-missing` drops it and leaves the output missing (the stage remakes it).
    damage_in_place(pushed)
    obj.unlink()
    (project / META).unlink()
    run(project, str(BIN / "dvc"), "pull", "--allow-missing", "prepare@tabular", env=project_env())
    assert not obj.exists() and not (project / META).exists()
