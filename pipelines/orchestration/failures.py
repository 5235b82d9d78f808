"""A stage's failure: its exit code, whether to retry it, and the one line that names its root cause.

No Prefect import here: the command line reports failures without paying for it.
"""

from __future__ import annotations

import re
from typing import Any

from pipelines.errors import EXIT_BAD_INPUT, EXIT_UNAVAILABLE, Unavailable

STAGE_EXIT = re.compile(r"exited with (-?\d+)")
# DVC's repository lock, and its lock on a stage's deps and outs: another dvc command is at work here.
DVC_LOCK_BUSY = ("Unable to acquire lock", "is busy, it is being blocked by")
# `OSError: [Errno 28] No space left on device`, also behind Ray's `(RayTrainWorker pid=123)` prefix: an
# exception line outside a traceback is recognised by its name (e.g. a worker's error that Ray reprints alone).
RAY_PREFIX = re.compile(r"^\([^)]*\) ")
EXCEPTION_LINE = re.compile(
    r"^(?:\([^)]*\)\s*)?(?P<line>(?:[A-Za-z_]\w*\.)*(?P<type>[A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt|Fault))"
    r"(?::\s.*)?)$"
)
# Inside a traceback any class name counts (`botocore.errorfactory.NoSuchBucket: ...`, `zipfile.BadZipFile: ...`):
# the exception line is the first unindented line after "Traceback (most recent call last):" and its frames.
TRACEBACK_START = "Traceback (most recent call last):"
RAISED_LINE = re.compile(r"^(?P<line>(?:[A-Za-z_]\w*\.)*(?P<type>[A-Za-z_]\w*)(?::\s.*)?)$")
# Exceptions that only carry another one: the line naming what they carry is the root cause.
WRAPPERS = (
    "RayTaskError",
    "RayActorError",
    "ActorDiedError",
    "TrainingFailedError",
    "WorkerGroupError",
    "ControllerError",
    "TuneError",
    "CalledProcessError",
    "ReproductionError",
    "StageCmdFailedError",
    "SystemExit",
    "KeyboardInterrupt",
)


def root_cause(lines: list[str]) -> str | None:
    """The most specific error line of a stage's output, or None.

    A stage's own `error: ...` line (pipelines/errors.py: it names the file, key or row) wins;
    else the last exception line that is not a wrapper (Python prints a chain's root cause
    first and the wrappers after it; Ray prints a worker's traceback, then the driver's).
    """
    own = [line.strip()[len("error: ") :] for line in lines if line.strip().startswith("error: ")]
    if own:
        return own[-1]
    found = [(line, kind) for line, kind in exception_lines(lines) if kind not in WRAPPERS]
    return found[-1][0] if found else None


def exception_lines(lines: list[str]) -> list[tuple[str, str]]:
    """(line, exception class name) of each exception a traceback ends with, and of each lone exception line."""
    found = []
    in_frames = False
    for raw in lines:
        line = RAY_PREFIX.sub("", raw.rstrip(), count=1)
        if line.strip() == TRACEBACK_START:
            in_frames = True
            continue
        if in_frames and line[:1].isspace():  # `  File "...", line 3, in f` and the source lines below it
            continue
        match = RAISED_LINE.match(line) if in_frames else None
        match = match or EXCEPTION_LINE.match(line.strip())
        in_frames = False
        if match:
            found.append((match["line"].strip(), match["type"]))
    return found


class StageFailed(RuntimeError):
    """A stage's `dvc repro` failed; `exit_code` is the stage command's own (2: bad input, 75: source unavailable)."""

    def __init__(self, stage: str, message: str, exit_code: int | None = None, lock_busy: bool = False):
        super().__init__(message)
        self.stage, self.exit_code, self.lock_busy = stage, exit_code, lock_busy

    def __reduce__(self):  # keep the fields when Prefect pickles the exception into the task's state
        return (type(self), (self.stage, str(self), self.exit_code, self.lock_busy))

    @property
    def transient(self) -> bool:
        """Worth another attempt: never bad input; a source that was down or DVC's lock held by
        another dvc command always; any other failure only for ingest, the stage that reaches out."""
        if self.exit_code == EXIT_BAD_INPUT:
            return False
        if self.lock_busy or self.exit_code == EXIT_UNAVAILABLE:
            return True
        return self.stage.startswith("ingest@")


def stage_failure(stage: str, returncode: int, output: list[str]) -> StageFailed:
    """The StageFailed for a `dvc repro` that exited `returncode` after printing `output`.

    The message ends with one line naming the root cause, e.g.
    `stage 'train@digits' failed (exit 1): OSError: [Errno 28] No space left on device`.
    """
    tail = output[-30:]
    found = STAGE_EXIT.findall("\n".join(output))
    exit_code = int(found[-1]) if found else None
    lock_busy = any(busy in line for line in tail for busy in DVC_LOCK_BUSY)
    # The stage's own error lines say it best; DVC's "ERROR: failed to reproduce ..." only when there are none.
    context = (
        [line for line in tail if line.startswith("error:")]
        or [line for line in tail if line.startswith("ERROR")]
        or tail[-10:]
    )
    cause = root_cause(output) or (context[-1] if context else "no output")
    hint = ["(another dvc command is using this workspace: DVC's lock; retried with backoff)"] if lock_busy else []
    last = f"stage '{stage}' failed (exit {exit_code if exit_code is not None else returncode}): {cause}"
    return StageFailed(stage, "\n".join([*context, *hint, last]), exit_code=exit_code, lock_busy=lock_busy)


class RemoteUnavailable(Unavailable):
    """`dvc pull` or `dvc push` failed against the DVC remote (retried first): the message names the remote."""


def remote_failure(action: str, remote: str, url: str, attempts: int, output: str) -> RemoteUnavailable:
    """The one line for a failed `dvc <action>`: the remote, where it points, and DVC's own error line.

    DVC ends its output with a support banner; the cause is its first `ERROR: ...` line (a pull's
    "failed to connect to s3 ... - Could not connect to the endpoint URL" before "N files failed to download").
    """
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line[len("ERROR:") :].strip() for line in lines if line.startswith("ERROR:")]
    cause = errors[0] if errors else (lines[-1] if lines else "no output")
    where = f"{'to' if action == 'push' else 'from'} remote {remote!r} ({url})"
    plural = "s" if attempts != 1 else ""
    return RemoteUnavailable(f"dvc {action} {where} failed after {attempts} attempt{plural}: {cause}")


class NotPushed(Unavailable):
    """The run succeeded but `dvc push` did not: `outcome` is the run's result, the message says what to do."""

    def __init__(self, message: str, outcome: dict[str, Any] | None = None):
        super().__init__(message)
        self.outcome = outcome or {}

    def __reduce__(self):  # Prefect keeps it in the flow run's final state
        return (type(self), (str(self), self.outcome))


def retry_transient(task, task_run, state) -> bool:
    """Prefect's retry_condition_fn: retry only StageFailed.transient (bad input fails at once)."""
    err = state.data if isinstance(state.data, BaseException) else state.result(raise_on_failure=False)
    return isinstance(err, StageFailed) and err.transient
