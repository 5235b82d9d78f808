"""What of a stage's output a person reads: DVC's bookkeeping and git hints go to the debug log.

`dvc repro` wraps each stage's own lines in its own: the command it runs, "Updating lock
file", a git hint ("To track the changes with git, run: git add dvc.lock ...", "To enable auto
staging ..."), "Use `dvc push` ...", and a warning for every declared plots folder a task leaves
empty. The flow runs many stages per run, so that is most of what a user would read; the run ends
instead with one summary of what to commit (`changes_to_commit`) and where the outputs were pushed.
"""

from __future__ import annotations

import logging
import re
import subprocess
import time
from pathlib import Path

DVC_CHATTER = re.compile(
    r"^(> .*"  # the stage's command line ("Running stage 'train@digits':" before it stays: the stage started)
    r"|(Generating|Updating) lock file '.*'"
    r"|To track the changes with git, run:"
    r"|git add .*"
    r"|To enable auto staging, run:"
    r"|dvc config core\.autostage true"
    r"|Use `dvc push` to send your updates to remote storage\."
    r"|WARNING: '.*' is empty\.)$"
)


def is_chatter(line: str) -> bool:
    """DVC's per-stage bookkeeping and hints, which a stage run from the flow does not need to show."""
    return bool(DVC_CHATTER.match(line.strip()))


def changes_to_commit(root: Path) -> list[str]:
    """The files git should record after a run (dvc.lock, params.yaml, DVC's .gitignore files), if `root` is a repo."""
    proc = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all", "--", "dvc.lock", "params.yaml", "data"],
        cwd=root,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        return []  # not a git checkout: nothing to say
    changed = [line[3:].strip().strip('"') for line in proc.stdout.splitlines() if len(line) > 3]
    return [path for path in changed if path in ("dvc.lock", "params.yaml") or path.endswith(".gitignore")]


class _NoTracebackFor(logging.Filter):
    """Keep the line, drop the traceback, for failures whose message already says everything (a stage's exit)."""

    def __init__(self, types: tuple[type[BaseException], ...]) -> None:
        super().__init__()
        self.types = types

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], self.types):
            record.exc_info, record.exc_text = None, None
        return True


def no_tracebacks_for(*types: type[BaseException]) -> None:
    """Prefect logs every exception that ends a task or flow run with its traceback: through the flow's own
    code and Prefect's engine, 50 lines above a bad input's one line. For these types the message is the news."""
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logging.getLogger(name).addFilter(_NoTracebackFor(types))


STAGE_PERCENT = re.compile(r"\| stage (\d+)%(.*)$")
CANDIDATE = re.compile(r"^\[[^\]]+/([^\]]+)\] candidate (\d+) of (\d+)")


class TrainProgress:
    """A train stage's progress artifact on its Prefect run page: the percent of the stage's epochs done
    (across its candidates; training/callbacks.StageProgress prints it on each epoch line), updated as
    those lines arrive. Created at the first such line, so a stage DVC skips has none."""

    MIN_SECONDS = 0.5  # between two updates: a fast stage prints many epoch lines a second

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.key = re.sub(r"[^a-z0-9-]+", "-", f"{stage.partition('@')[2]}-training-progress".lower())
        self.artifact_id = None
        self.percent = -1
        self.candidate = ""
        self.updated = 0.0

    def see(self, line: str) -> None:
        if found := CANDIDATE.match(line):
            self.candidate = f"; candidate {found.group(1)} ({found.group(2)} of {found.group(3)})"
        found = STAGE_PERCENT.search(line)
        if not found:
            return
        percent = int(found.group(1))
        if percent != self.percent and (percent == 100 or time.monotonic() - self.updated >= self.MIN_SECONDS):
            self._publish(percent, f"{self.stage}: {percent}% of its epochs{found.group(2)}{self.candidate}")

    def finish(self) -> None:
        """The stage succeeded: its last candidates may have stopped early, before 100 % was printed."""
        if self.artifact_id is not None and self.percent != 100:
            self._publish(100, f"{self.stage}: done")

    def _publish(self, percent: int, description: str) -> None:
        from prefect.artifacts import create_progress_artifact, update_progress_artifact
        from prefect.logging import get_run_logger

        self.percent, self.updated = percent, time.monotonic()
        try:
            if self.artifact_id is None:
                self.artifact_id = create_progress_artifact(progress=percent, key=self.key, description=description)
            else:
                update_progress_artifact(self.artifact_id, progress=percent, description=description)
        except Exception as exc:  # the page's progress bar is not worth a failed stage: say so, then go on
            get_run_logger().warning(f"{self.stage}: progress artifact not updated: {type(exc).__name__}: {exc}")
