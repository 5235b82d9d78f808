"""Inside a worker: what a stage's run has done so far, reported to Ray for resume and kept per candidate.

Every epoch, all ranks save the in-flight candidate's Lightning checkpoint (rank 0 writes it)
and report it to Ray with `progress.json` (the candidates already done and the one in flight):
that is the resume point after a lost worker or driver. Rank 0 also keeps the candidate's best
`keep` epochs under the run's storage and rewrites its state.json (status, kept epochs,
history), which the driver reads after the fit (`training.fit.collect`).

In Ray Train's local mode (the worker in the stage's own process) a reported checkpoint stays in
memory and dies with the process, so there (`training.runtime.LocalMode`) rank 0 also writes the
resume point under the run's storage (`<run>/resume/`): the Lightning checkpoint first, then
`progress.json` naming it, so a reader never finds progress without its checkpoint. A re-run of the
stage (after Ctrl-C or a kill) resumes from there.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from pipelines.training import store

PROGRESS = "progress.json"
LIGHTNING_CKPT = "checkpoint.ckpt"
RESUME_DIR = "resume"  # under the run: local mode's resume point

# Keeps a reported resume point beside Ray: (its folder, finished, current, fence) -> None (`training.runtime`).
KeepResume = Callable[[Path, dict[str, Any], str | None, store.Fence | None], None]


def resume_point(checkpoint) -> tuple[dict[str, Any], str | None, Path | None]:
    """(finished candidates -> their status, the candidate in flight, its Lightning checkpoint) from Ray's latest."""
    if checkpoint is None:
        return {}, None, None
    local = Path(checkpoint.to_directory())  # a private copy: the caller removes it (`discard_resume_copy`)
    progress = store.read_json(str(local / PROGRESS), {"finished": {}, "current": None})
    ckpt = local / LIGHTNING_CKPT
    if not ckpt.exists():
        shutil.rmtree(local, ignore_errors=True)
        return progress["finished"], progress["current"], None
    return progress["finished"], progress["current"], ckpt


def stored_resume_point(run: str) -> tuple[dict[str, Any], str | None, Path | None]:
    """The resume point local mode left under the run's storage (none: start from scratch)."""
    where = f"{run}/{RESUME_DIR}"
    progress = store.read_json(f"{where}/{PROGRESS}")
    if progress is None:
        return {}, None, None
    ckpt = None
    if progress.get("checkpoint"):
        uri, ckpt = f"{where}/{progress['checkpoint']}", Path(tempfile.mkdtemp(prefix="resume-")) / LIGHTNING_CKPT
        if "://" in uri:
            store.download(uri, ckpt)
        else:  # a private copy as from Ray's checkpoint, so the caller may remove it alike
            shutil.copyfile(uri, ckpt)
    return progress["finished"], progress["current"], ckpt


def discard_resume_copy(ckpt: Path | None) -> None:
    """Remove the private copy a resume point was read into (its folder holds nothing else)."""
    if ckpt is not None:
        shutil.rmtree(ckpt.parent, ignore_errors=True)


def save_resume_point(
    run: str, checkpoint_dir: Path, finished: dict[str, Any], current: str | None, fence: store.Fence | None = None
) -> None:
    """Local mode's resume point on the run's storage (see the module's docstring for the order of writes)."""
    if fence is not None:
        fence.check()
    where = f"{run}/{RESUME_DIR}"
    previous = (store.read_json(f"{where}/{PROGRESS}") or {}).get("checkpoint")
    name = None
    if (checkpoint_dir / LIGHTNING_CKPT).exists():
        name = f"checkpoint-{uuid.uuid4().hex[:12]}.ckpt"  # new name each time: progress.json names a whole file
        store.upload(checkpoint_dir / LIGHTNING_CKPT, f"{where}/{name}")
    store.write_json(f"{where}/{PROGRESS}", {"finished": finished, "current": current, "checkpoint": name})
    if previous and previous != name:
        store.delete_file(f"{where}/{previous}")


def report(
    metrics: dict[str, Any],
    finished: dict[str, Any],
    current: str | None,
    rank: int,
    save=None,
    keep_resume: KeepResume | None = None,
    fence: store.Fence | None = None,
) -> None:
    """One Ray report from every rank (it is a barrier); rank 0 attaches the resume checkpoint.

    save(path): writes the in-flight Lightning checkpoint there (called on every rank: Lightning's
    save_checkpoint is collective); None between candidates. keep_resume: the runtime's keeper of the
    resume point beside Ray's (local mode's, on the run's storage), called by rank 0 with `fence`.
    """
    import ray.train

    # Named before it exists, made inside the try: a signal that lands while the folder is being made
    # (the stop a user sends right after an epoch's line) cannot leave it behind.
    tmp = Path(tempfile.gettempdir()) / f"progress-{uuid.uuid4().hex}"
    try:
        tmp.mkdir(mode=0o700)
        if save is not None:
            save(tmp / LIGHTNING_CKPT)
        checkpoint = None
        if rank == 0:
            store.write_json(str(tmp / PROGRESS), {"finished": finished, "current": current})
            checkpoint = ray.train.Checkpoint.from_directory(str(tmp))
            if keep_resume is not None:
                keep_resume(tmp, finished, current, fence)
        ray.train.report(metrics, checkpoint=checkpoint)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class Keeper:
    """A candidate's best `keep` epochs by one score, best first (ties: the earlier epoch)."""

    def __init__(self, score: str, mode: str, keep: int) -> None:
        self.score, self.mode, self.keep = score, mode, keep
        self.kept: list[dict[str, Any]] = []

    def offer(self, epoch: int, metrics: dict[str, float]) -> tuple[bool, list[int]]:
        """(is this epoch kept, epochs evicted to make room)."""
        value = metrics.get(self.score)
        if value is None or not math.isfinite(value):
            return False, []
        self.kept = [k for k in self.kept if k["epoch"] < epoch]  # a resumed epoch replaces its old self
        entry = {"epoch": epoch, "score": value, "metrics": metrics}
        ranked = sorted(self.kept + [entry], key=lambda k: k["score"] if self.mode == "min" else -k["score"])
        before = {k["epoch"] for k in self.kept}
        self.kept = ranked[: self.keep]
        now = {k["epoch"] for k in self.kept}
        return epoch in now, sorted(before - now)


class CandidateReport(pl.Callback):
    """Last callback of each epoch: keep the best weights, write the candidate's state, report to Ray."""

    def __init__(
        self,
        candidate: str,
        index: int,
        run: str,
        keeper: Keeper,
        finished: dict,
        history,
        keep_resume: KeepResume | None = None,
        fence: store.Fence | None = None,
    ) -> None:
        self.candidate, self.index, self.keeper, self.finished, self.history = (
            candidate,
            index,
            keeper,
            finished,
            history,
        )
        self.where = store.candidate_uri(run, candidate)
        self.keep_resume = keep_resume  # `training.runtime`: where the resume point is kept beside Ray
        self.fence = fence or store.Fence(run)  # rank 0 writes only while its attempt is the run's current one

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        epoch, rank = trainer.current_epoch, trainer.global_rank
        kept, evicted = self.keeper.offer(epoch, metrics)  # before saving: the checkpoint carries the kept list

        def save(path: Path) -> None:
            trainer.save_checkpoint(str(path), weights_only=False)
            if rank == 0:
                self.fence.check()
                if kept:
                    store.upload(path, f"{self.where}/epoch_{epoch}/{LIGHTNING_CKPT}")
                self.write_state("running")

        report(
            {**metrics, "epoch": epoch, "candidate_index": self.index},
            self.finished,
            self.candidate,
            rank,
            save,
            self.keep_resume,
            self.fence,
        )
        if rank == 0:  # only once the resume point no longer lists them
            if evicted:
                self.fence.check()
            for old in evicted:
                store.delete_dir(f"{self.where}/epoch_{old}")

    def write_state(self, status: str, error: str | None = None) -> None:
        self.fence.check()
        state = {"status": status, "error": error, "kept": self.keeper.kept, "history": self.history.rows}
        store.write_json(f"{self.where}/state.json", state)

    def state_dict(self) -> dict[str, Any]:
        return {"kept": self.keeper.kept}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.keeper.kept = list(state_dict["kept"])
