"""One pipeline run at a time in a DVC workspace, and who holds it.

DVC locks the repository only while one `dvc` command runs. A flow run is a
sequence of them (one per stage) and it also writes params.yaml, so two runs in
one workspace (two deployments, a schedule firing during a run from the UI, the
CLI and the UI) would otherwise trip over DVC's lock halfway through or train on
each other's params. The flow holds this lock for its whole run: a second run
waits, and says in its log which run it is waiting for.

The lock is an flock(2) on .dvc/tmp/pipeline-run.lock (DVC's own tmp dir, not in
git); the kernel drops it when the holder dies, so it never goes stale. The file
holds a JSON record of the holder (flow run, pid, start, the stages it runs and
their process groups: a run's dataset chains run side by side), which is what
`python -m pipelines.workspace` prints and what the flow's cancellation hook uses
to stop the stages of a flow process that was killed.

    python -m pipelines.workspace [WORKDIR]     # who is running the pipeline here, if anyone
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pipelines.errors import Unavailable

LOCK_FILE = Path(".dvc") / "tmp" / "pipeline-run.lock"
TOKEN_ENV = "DL_PIPELINE_WORKSPACE_TOKEN"  # the holder's stages carry its token; anything else is refused


class WorkspaceBusy(Unavailable):
    pass


_held: dict[Path, WorkspaceLock] = {}


def lock_path(root: str | Path) -> Path:
    return Path(root).resolve() / LOCK_FILE


class WorkspaceLock:
    """The held lock of one workspace; `note()` updates the record others read."""

    def __init__(self, root: Path, fd: int, record: dict[str, Any]):
        self.root, self._fd, self.record = root, fd, record
        self._write = threading.Lock()  # the run's chains note their stages from several threads

    def note(self, **fields: Any) -> None:
        with self._write:
            self._save(fields)

    def stage_started(self, stage: str, pgid: int) -> None:
        with self._write:  # read and write under one hold: two chains' updates must not lose each other
            self._save({"stages": {**self.record.get("stages", {}), stage: pgid}})

    def stage_ended(self, stage: str) -> None:
        with self._write:
            self._save({"stages": {k: v for k, v in self.record.get("stages", {}).items() if k != stage}})

    def _save(self, fields: dict[str, Any]) -> None:
        self.record.update(fields)
        data = json.dumps(self.record, indent=1).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def stage_pgids(self) -> tuple[int, ...]:
        """Process groups of the stages running now (what a signal handler must stop)."""
        return tuple(int(pgid) for pgid in dict(self.record.get("stages", {})).values())


def read_record(root: str | Path) -> dict[str, Any] | None:
    """The last holder's record (also after the holder died), or None."""
    try:
        text = lock_path(root).read_text()
        return json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None


def holder(root: str | Path) -> dict[str, Any] | None:
    """The record of the run holding the workspace now, or None when it is free."""
    path = lock_path(root)
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_record(root) or {}
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def describe(record: dict[str, Any] | None) -> str:
    if not record:
        return "another pipeline run"
    who = f"flow run '{record.get('flow_run_name')}'" if record.get("flow_run_name") else f"pid {record.get('pid')}"
    parts = [who]
    if record.get("stages"):
        parts.append(f"running {', '.join(record['stages'])}")
    if record.get("started_at"):
        parts.append(f"since {record['started_at']}")
    if record.get("ui_url"):
        parts.append(record["ui_url"])
    return ", ".join(parts)


@contextlib.contextmanager
def hold(
    root: str | Path, record: dict[str, Any], on_wait: Callable[[str], None] | None = None
) -> Iterator[WorkspaceLock]:
    """Hold the workspace for a whole run, waiting (interruptibly) while another run holds it."""
    root = Path(root).resolve()
    path = lock_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait:
                on_wait(f"workspace {root} is in use by {describe(read_record(root))}; waiting for it to finish")
            waited = time.monotonic()
            fcntl.flock(fd, fcntl.LOCK_EX)  # a signal (cancellation) interrupts the wait
            if on_wait:
                on_wait(f"workspace {root} is free after {time.monotonic() - waited:.0f}s; starting")
        lock = WorkspaceLock(
            root,
            fd,
            {
                "token": uuid.uuid4().hex,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                **record,
            },
        )
        lock.note()
        _held[root] = lock
        try:
            yield lock
        finally:
            _held.pop(root, None)
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the flock


def held(root: str | Path) -> WorkspaceLock | None:
    """The lock this process holds on `root`, if any."""
    return _held.get(Path(root).resolve())


def refuse_if_held_elsewhere(root: str | Path = ".") -> None:
    """In a stage: refuse to run while a pipeline run holds the workspace, unless this stage is that run's.

    DVC unlocks its repository while a stage's command runs (it locks only that
    stage's deps and outs), so a `dvc repro` by hand during a flow run could
    otherwise run other stages in the middle of it.
    """
    record = holder(root)
    if record is None or (record.get("token") and record["token"] == os.environ.get(TOKEN_ENV)):
        return
    raise WorkspaceBusy(
        f"workspace {Path(root).resolve()} is in use by {describe(record)}: wait for it to finish or cancel it "
        f"(python -m pipelines.workspace shows who holds it)"
    )


def stop_process_group(
    pgid: int, grace_seconds: float = 10.0, reap: Callable[[], object] | None = None, first: int = signal.SIGTERM
) -> bool:
    """Signal a process group (SIGTERM), then SIGKILL what is left after the grace period. True if it was there."""
    try:
        os.killpg(pgid, first)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline:
        if reap:
            reap()  # our own child would linger as a zombie and keep the group alive
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    if reap:
        reap()
    return True


def main(argv: list[str] | None = None) -> int:
    """`python -m pipelines.workspace [DIR]`: which run holds the workspace; exit 1 while one does."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m pipelines.workspace",
        description="Say which pipeline run holds a workspace (exit 1 if one does).",
    )
    parser.add_argument("workdir", nargs="?", default=".", help="the workspace (default: the current directory)")
    root = Path(parser.parse_args(argv).workdir)
    record = holder(root)
    if record is None:
        print(f"{root.resolve()}: free (no pipeline run holds it)")
        return 0
    print(f"{root.resolve()}: held by {describe(record)}")
    print(json.dumps(record, indent=1))
    return 1


if __name__ == "__main__":
    sys.exit(main())
