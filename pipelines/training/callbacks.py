"""Lightning callbacks used inside Ray workers."""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any

import lightning.pytorch as pl


def _epoch_metrics(trainer: pl.Trainer) -> dict[str, float]:
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


class EpochHistory(pl.Callback):
    """Per-epoch metrics kept in the checkpoint, so the latest one holds the learning curve."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []
        self._epoch_started = 0.0
        self._epoch_wall_start = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_started = time.perf_counter()
        self._epoch_wall_start = time.time()  # comparable across processes (benchmark)
        batches = getattr(pl_module, "train_batches", None)
        if batches is not None:
            batches.epoch = trainer.current_epoch  # same shuffles after a resume

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        row = {
            "epoch": trainer.current_epoch,
            "epoch_seconds": time.perf_counter() - self._epoch_started,
            "epoch_start_time": self._epoch_wall_start,
            # Which process trained this epoch: after a worker is replaced, the rows show the resume.
            "rank0_pid": os.getpid(),
        }
        row.update(_epoch_metrics(trainer))
        self.rows = [r for r in self.rows if r["epoch"] < trainer.current_epoch] + [row]

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict["rows"])


class StageProgress:
    """How far a train stage is through its epochs, across its candidates, and a bound on the time left.

    The stage's epochs are every candidate's `epochs`; a candidate that stops early (early stopping, a
    non-finite loss) or was trained before a restart counts as wholly done. The time left is the mean
    seconds of the epochs this process trained times the epochs left: an upper bound, as early stopping
    usually ends a candidate sooner.
    """

    def __init__(self, epochs_per_candidate: list[int]) -> None:
        self.total = sum(epochs_per_candidate)
        self.candidates = len(epochs_per_candidate)
        self.closed = 0  # epochs of candidates that are done
        self.current = 0  # epochs done of the candidate in flight
        self.trained_seconds, self.trained_epochs = 0.0, 0

    def candidate_done(self, epochs: int) -> None:
        self.closed += epochs
        self.current = 0

    def epoch_done(self, epoch: int, seconds: float | None) -> None:
        self.current = epoch
        if seconds is not None:
            self.trained_seconds += seconds
            self.trained_epochs += 1

    def percent(self) -> int:
        return int(100 * min(self.closed + self.current, self.total) / max(self.total, 1))

    def seconds_left(self) -> float | None:
        if not self.trained_epochs:
            return None
        return self.trained_seconds / self.trained_epochs * max(self.total - self.closed - self.current, 0)

    def describe(self) -> str:
        left = self.seconds_left()
        if left is None:
            return f"stage {self.percent()}%"
        return f"stage {self.percent()}%, " + (f"<= {_duration(left)} left" if left >= 1 else "< 1 s left")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


class EpochPrinter(pl.Callback):
    """One line per epoch from rank 0: the user's view of training progress (and the flow's, which parses
    `stage N%` into the train stage's Prefect progress artifact)."""

    def __init__(self, name: str, max_epochs: int, stage: StageProgress | None = None) -> None:
        self.name, self.max_epochs = name, max_epochs
        self.stage = stage or StageProgress([max_epochs])
        self._started: float | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        seconds = time.perf_counter() - self._started if self._started is not None else None
        epoch = trainer.current_epoch + 1
        self.stage.epoch_done(epoch, seconds)
        shown = " ".join(f"{k}={v:.4f}" for k, v in sorted(_epoch_metrics(trainer).items()))
        took = f" ({seconds:.2f} s)" if seconds is not None else ""
        # sys.__stdout__, not print(): Ray Train V2 patches print() in workers
        # and would echo every line twice.
        sys.__stdout__.write(f"[{self.name}] epoch {epoch}/{self.max_epochs}{took} {shown} | {self.stage.describe()}\n")
        sys.__stdout__.flush()


class NonFiniteLoss(RuntimeError):
    """A candidate's training loss became NaN or infinite: that candidate stops, the others go on."""


class FiniteLoss(pl.Callback):
    """Stop a candidate whose epoch's training loss is not finite, with a message that says what to check.

    Checked once per epoch, on the epoch's mean loss (a NaN in any step makes the mean NaN), and
    decided across ranks so that every worker stops at the same point.
    """

    def __init__(self, candidate: str, lr: float | None) -> None:
        self.candidate, self.lr = candidate, lr

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loss = trainer.callback_metrics.get("train/loss")
        value = float(loss) if loss is not None else 0.0
        if trainer.strategy.reduce_boolean_decision(not math.isfinite(value), all=False):
            dataset, _, name = self.candidate.partition("/")
            raise NonFiniteLoss(
                f"datasets.{dataset}.train.candidates.{name}: the training loss became {value} in epoch "
                f"{trainer.current_epoch + 1}; check the inputs for NaN/inf values or extreme scales, and try a "
                f"lower learning rate (lr is {self.lr})"
            )


class ShardLog(pl.Callback):
    """Which rows of the training split this rank iterated, each epoch (`training.rank_check.shard_record`).

    Only the epochs this process trained: after a restart, those since the resume. (Not kept in the
    checkpoint: rank 0 writes it, and every rank would resume with rank 0's shards.)
    """

    def __init__(self) -> None:
        self.epochs: list[dict[str, Any]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from pipelines.training.rank_check import shard_record, streamed_record

        batches = getattr(pl_module, "train_batches", None)  # the rank's batches, as EpochHistory finds them
        if batches is None:
            return
        if hasattr(batches, "epoch_digest"):  # streamed: the rows' count and a digest of their contents
            record = streamed_record(trainer.current_epoch, batches.epoch_rows, batches.epoch_digest)
        elif batches.iterated is not None:
            record = shard_record(trainer.current_epoch, batches.iterated.cpu().numpy(), batches.left_out().numpy())
        else:
            return
        # a resumed epoch replaces its old self, as in EpochHistory
        self.epochs = [e for e in self.epochs if e["epoch"] < trainer.current_epoch]
        self.epochs.append(record)
