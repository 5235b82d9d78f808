"""What a person reads of a run: DVC's chatter filtered, one `error:` per error line, the stage's progress."""

from __future__ import annotations

import subprocess

import pytest

from pipelines.errors import error_text
from pipelines.orchestration.stage_output import changes_to_commit, is_chatter
from pipelines.training.callbacks import StageProgress

DVC_OUTPUT = """Running stage 'evaluate@tabular':
> python -m pipelines.stages.evaluate tabular
evaluate[tabular]: fnn-relu: val/accuracy=0.9882, test/accuracy=0.9647
WARNING: 'data/evaluate/tabular/predictions' is empty.
Updating lock file 'dvc.lock'
To track the changes with git, run:
\tgit add dvc.lock data/evaluate/tabular/.gitignore
To enable auto staging, run:
\tdvc config core.autostage true
Use `dvc push` to send your updates to remote storage.
Stage 'register@tabular' didn't change, skipping
ERROR: failed to reproduce 'ingest@x': failed to run: python -m pipelines.stages.ingest x, exited with 2"""


def test_dvc_bookkeeping_and_hints_are_chatter_and_the_stage_s_own_lines_are_not():
    kept = [line for line in DVC_OUTPUT.splitlines() if not is_chatter(line)]
    assert kept == [
        "Running stage 'evaluate@tabular':",
        "evaluate[tabular]: fnn-relu: val/accuracy=0.9882, test/accuracy=0.9647",
        "Stage 'register@tabular' didn't change, skipping",
        "ERROR: failed to reproduce 'ingest@x': failed to run: python -m pipelines.stages.ingest x, exited with 2",
    ]
    assert not is_chatter("WARNING: 'data/evaluate/tabular/predictions' is empty of rows in column x")  # not DVC's


def test_what_to_commit_after_a_run_is_what_git_sees_changed(tmp_path):
    assert changes_to_commit(tmp_path) == []  # not a git checkout: nothing to say
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "params.yaml").write_text("a: 1\n")
    subprocess.run([*git, "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "x"], cwd=tmp_path, check=True)
    assert changes_to_commit(tmp_path) == []
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    (tmp_path / "data" / "train").mkdir(parents=True)
    (tmp_path / "data" / "train" / ".gitignore").write_text("/tabular\n")
    (tmp_path / "data" / "train" / "other.txt").write_text("not DVC's\n")
    (tmp_path / "params.yaml").write_text("a: 2\n")
    assert sorted(changes_to_commit(tmp_path)) == ["data/train/.gitignore", "dvc.lock", "params.yaml"]


@pytest.mark.parametrize(
    "message, printed",
    [
        ("bad.csv: row 3: not a number", "error: bad.csv: row 3: not a number"),
        (
            "error: bad.csv: row 3\nstage 'ingest@x' failed (exit 2): bad.csv: row 3",
            "error: bad.csv: row 3\nerror: stage 'ingest@x' failed (exit 2): bad.csv: row 3",
        ),
        (
            "ERROR: failed to reproduce 'x'\nstage 'x' failed (exit 1): killed",
            "error: failed to reproduce 'x'\nerror: stage 'x' failed (exit 1): killed",
        ),
        (
            "Traceback (most recent call last):\n  File \"a.py\"\nstage 'x' failed (exit 1): OSError: disk full",
            "Traceback (most recent call last):\n  File \"a.py\"\nerror: stage 'x' failed (exit 1): OSError: disk full",
        ),
    ],
)
def test_every_error_line_has_one_error_prefix(message, printed):
    assert error_text(message) == printed


def test_the_stage_s_progress_counts_every_candidate_s_epochs_and_bounds_the_time_left():
    stage = StageProgress([10, 30])  # two candidates: 40 epochs in all
    assert stage.describe() == "stage 0%"
    for epoch in (1, 2):
        stage.epoch_done(epoch, seconds=0.5)
    assert stage.percent() == 5 and stage.seconds_left() == pytest.approx(38 * 0.5)
    stage.candidate_done(10)  # early stopping after epoch 2: its other 8 epochs will not run
    assert stage.percent() == 25 and stage.seconds_left() == pytest.approx(30 * 0.5)
    stage.epoch_done(1, seconds=1.5)  # mean of the epochs this process trained: (0.5 + 0.5 + 1.5) / 3
    assert stage.describe() == "stage 27%, <= 24 s left"
    stage.epoch_done(30, seconds=None)  # an epoch whose time is unknown (resumed mid-epoch) changes no mean
    assert stage.describe() == "stage 100%, < 1 s left"


def test_a_long_loop_says_how_far_it_is_and_a_quick_one_says_nothing(capsys):
    from pipelines.loop_progress import reported

    assert list(reported(range(3), "quick")) == [0, 1, 2]
    assert capsys.readouterr().out == ""
    assert list(reported(iter(range(4)), "slow", total=4, every=0)) == [0, 1, 2, 3]
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines] == ["slow: 1/4 (25%)", "slow: 2/4 (50%)", "slow: 3/4 (75%)"]
    assert all(line.endswith(" s left") for line in lines)
