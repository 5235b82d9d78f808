"""Data and models on S3 (a real S3-compatible server on 127.0.0.1): the DVC remote and the model
registry both there; push, then a fresh clone pulls and reproduces the run without re-running a stage."""

import json
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import BIN, copy_of, project_env, run

sys.path.insert(0, str(Path(__file__).parent))
from s3_server import start_server  # noqa: E402

pytestmark = pytest.mark.slow


def test_the_flow_pushes_to_s3_and_a_fresh_clone_pulls_and_reproduces_the_run(tmp_path, monkeypatch, first_tabular_run):
    """One training serves both halves: the flow (pull first, push after, saved as an experiment), then a clone.

    The training is the session's first run of the default table (conftest.first_tabular_run), copied: its
    outputs are not on S3 yet, and its model not in the S3 registry."""
    from pipelines.orchestration.flow import training_pipeline

    with start_server(bucket="ml-pipeline") as s3:
        # Credentials and the endpoint come from the environment only: nothing secret goes into the repo.
        for var, value in {
            **s3.env(),
            "AWS_CONFIG_FILE": str(tmp_path / "none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
            "DL_REGISTRY_CACHE": str(tmp_path / "cache"),
        }.items():
            monkeypatch.setenv(var, value)
        env = project_env()
        project = copy_of(first_tabular_run, tmp_path / "a")
        params = yaml.safe_load((project / "params.yaml").read_text())
        params["register"]["registry"] = "s3://ml-pipeline/models"
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        dvc, git = str(BIN / "dvc"), ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
        run(project, dvc, "remote", "add", "-d", "storage", "s3://ml-pipeline/dvc", env=env)
        run(project, *git, "commit", "-qam", "remote", env=env)
        training_pipeline(workdir=str(project), save_experiment_as="nightly 1")
        assert s3.client().list_objects_v2(Bucket="ml-pipeline", Prefix="dvc/")["KeyCount"] > 0
        assert "in sync" in run(project, dvc, "status", "--cloud", env=env)  # everything the run made was pushed
        assert "nightly-1" in run(project, dvc, "exp", "list", env=env)
        run(project, *git, "add", "-A", env=env)
        run(project, *git, "commit", "-qm", "a run", env=env)
        assert (
            "endpoint" not in (project / ".dvc/config").read_text()
            and "testing" not in (project / ".dvc/config").read_text()
        )

        clone = tmp_path / "b"
        run(tmp_path, "git", "clone", "-q", str(project), str(clone), env=env)
        assert not (clone / "data/train/tabular").exists()
        run(clone, dvc, "pull", env=env)
        assert (clone / "data/train/tabular/fnn-relu/model.pt").exists()
        out = run(clone, dvc, "repro", env=env)
        assert "Running stage" not in out  # everything pulled is up to date: nothing re-runs
        assert json.loads((clone / "data/evaluate/tabular/metrics.json").read_text()) == json.loads(
            (project / "data/evaluate/tabular/metrics.json").read_text()
        )

        # Seeds everywhere: re-training from scratch on CPU gives the same metrics (README: tolerance 1e-6).
        run(clone, dvc, "repro", "-f", "-s", "train@tabular", env=env)
        out = run(clone, dvc, "repro", "-s", "evaluate@tabular", env=env)
        again = json.loads((clone / "data/evaluate/tabular/metrics.json").read_text())
        first = json.loads((project / "data/evaluate/tabular/metrics.json").read_text())
        for name, scores in first["candidates"].items():
            for key, value in scores.items():  # split/metric keys (val/..., test/...)
                if isinstance(value, float):
                    assert again["candidates"][name][key] == pytest.approx(value, abs=1e-6), (name, key)

        # The registered version lives on S3 and loads (sha256-checked) from the clone's side too.
        registered = yaml.safe_load((clone / "data/register/tabular.json").read_text())
        assert registered["uri"].startswith("s3://ml-pipeline/models/tabular-fnn/")
        listing = run(
            clone,
            str(BIN / "python"),
            "-m",
            "pipelines.registry.cli",
            "list",
            "--registry",
            "s3://ml-pipeline/models",
            env=env,
        )
        assert "tabular-fnn" in listing and "production=v1" in listing
