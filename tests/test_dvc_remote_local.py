"""The committed default DVC remote (`local`, a directory): the flow's first run pushes to it, and
another clone of the project pulls from it and reproduces the run without re-running a stage.

Tests repoint the remote at a temp dir through .dvc/config.local (tests/conftest.copy_project),
the same override the README gives users, so nothing is written to the real home directory.
"""

import json
from pathlib import Path

import pytest

from tests.conftest import BIN, ROOT, copy_of, local_remote_dir, point_local_remote, project_env, run

GIT = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]


def test_the_committed_default_remote_is_a_directory_under_the_users_home():
    """`~` in .dvc/config is expanded by DVC for each user: every clone on a machine shares the one remote."""
    from dvc.config import Config

    conf = Config(dvc_dir=str(ROOT / ".dvc"), validate=True).load_one("repo")  # .dvc/config only, not a config.local
    assert conf["core"]["remote"] == "local"
    url = conf["remote"]["local"]["url"]
    assert url == str(Path.home() / ".local/share/dl-pipeline/dvc-remote") and url.def_path.startswith("~/")


@pytest.mark.slow
def test_the_flow_pushes_to_the_default_remote_and_a_clone_pulls_and_reproduces(tmp_path, first_tabular_run):
    """The session's first run (conftest.first_tabular_run: the flow on a fresh copy, one FNN on the default table);
    the clone is made from a copy of it, so the tests that go on from that run see it as the flow left it."""
    from pipelines.orchestration.dvc_ops import default_remote

    env, dvc = project_env(), str(BIN / "dvc")
    first = first_tabular_run
    remote = local_remote_dir(first.project)
    # The copy's default remote was the temp dir, not ~/.local/share, and did not exist before the run.
    assert first.remote_url == str(remote) and not first.remote_existed
    assert default_remote(str(first.project)) == "local"

    # The first run ever: nothing on the remote yet (pull --allow-missing), everything there after it.
    assert not any(s["skipped"] for s in first.result["stages"])
    objects = [p for p in (remote / "files" / "md5").rglob("*") if p.is_file()]
    assert len(objects) > 10, objects  # raw and prepared data, checkpoints, plots, metrics, the register record
    assert "in sync" in run(first.project, dvc, "status", "--cloud", env=env)

    project = copy_of(first, tmp_path / "a")  # committed below: the first run's own project stays as it was
    remote = local_remote_dir(project)
    run(project, *GIT, "add", "-A", env=env)
    run(project, *GIT, "commit", "-qm", "a run", env=env)
    clone = tmp_path / "b"
    run(tmp_path, "git", "clone", "-q", str(project), str(clone), env=env)
    assert not (clone / ".dvc/config.local").exists() and not (clone / "data/train/tabular").exists()
    point_local_remote(clone, remote)  # a clone on this machine would need nothing: ~/.local/share is shared
    run(clone, dvc, "pull", env=env)
    assert (clone / "data/train/tabular/fnn-relu/model.pt").exists()
    out = run(clone, dvc, "repro", env=env)
    assert "Running stage" not in out, out  # everything pulled is up to date: nothing re-runs
    metrics = "data/evaluate/tabular/metrics.json"
    assert json.loads((clone / metrics).read_text()) == json.loads((project / metrics).read_text())
    assert run(clone, "git", "status", "--porcelain", env=env) == ""  # the repro changed nothing tracked
