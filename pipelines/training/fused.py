"""Fused steps: K minibatch updates inside one Lightning step, for CPU workers whose steps are tiny.

Why: Lightning's per-step machinery (fit loop, batch hooks, logger connector, the automatic-optimization
closure, its LightningOptimizer and precision wrappers, a profiler section per hook and callback; ~1.3 ms
of Python, BENCHMARKS.md) costs more than a small model's whole update. Fed groups of K consecutive
minibatches (`TensorBatches(group=K)`), `FusedTaskModule` runs the K updates inside one Lightning step,
under manual optimization, with the raw torch optimizer: the same minibatches in the same order, one
update each, the same weights bit for bit (tests/test_fused_steps.py, tests/test_fused_worker.py).

What stays as in Lightning's automatic loop, per update, in its order: the forward; on_before_zero_grad
and `optimizer_zero_grad`; the strategy's pre_backward, on_before_backward, the `backward` hook,
on_after_backward, the strategy's post_backward; on_before_optimizer_step and a module's own
`configure_gradient_clipping`; the module's `optimizer_step` hook (given the raw optimizer);
`trainer.global_step` counting every update (`count_update`, the one write to Lightning's private state);
step- and epoch-interval LR schedulers stepped after the updates where Lightning steps them. Callback and
module hooks are called directly, not through Lightning's dispatch. What changes: the batch-level hooks
(on_train_batch_start/end) run once per group of K.

Under DDP (several Ray workers) every update still all-reduces its gradients: the strategy's pre_backward
readies DDP's reducer for each backward (as Lightning's manual optimization does), so every rank applies
the same averaged gradients at every update, as unfused DDP does. Buffers (BatchNorm's running stats) are
broadcast from rank 0 after each group (`_broadcast_buffers`), where unfused DDP's forward broadcasts them
before every update and before validation (under manual optimization Lightning turns that off): between
two broadcasts another rank's buffers follow its own minibatches, but rank 0's never depend on another
rank's, and training-mode forwards do not read them. So the weights and buffers are those of unfused DDP,
bit for bit, on every rank from each group's end on (tests/test_fused_ddp.py).

What cannot be fused, so the run takes one Lightning step per minibatch (K = 1) instead: strategies other
than one device or DDP, GPUs and other precisions than fp32 (their own per-step costs and plugins), and
the Trainer's gradient_clip_val / accumulate_grad_batches (Lightning applies them only under automatic
optimization). A ReduceLROnPlateau schedule is refused when the fit starts. `updates_per_step` is the one
place K is decided.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.strategies import DDPStrategy, SingleDeviceStrategy
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch.nn.parallel import DistributedDataParallel

from models.task_module import TaskModule
from pipelines.training.batches import Batch

logger = logging.getLogger(__name__)

# A fused Lightning step holds at least this much work: Lightning's own per-step cost is then paid once
# per K updates, ~3 % of them. The default FNN (10-64-32-2, batch 64, ~0.18 M multiply-adds, ~0.65 ms a
# step) gets K = 64, the cap that bounds a group's rows for the tiniest models; `make bench`'s FNN
# (64-256-256-2, batch 512, 42 M, ~2 ms) K = 24, and K = 48 on each of 2 DDP workers (256 rows each).
# Steps of 1 G multiply-adds and more stay one per Lightning step.
FUSED_STEP_MACS = 1_000_000_000
MAX_FUSED = 64


class FusedStepsUnsupported(RuntimeError):
    """The fused module was asked for something it cannot do the way Lightning's automatic loop does."""


def unfusable_settings(trainer: pl.Trainer) -> list[str]:
    """The trainer's step-level settings that only Lightning's automatic optimization applies.

    Lightning refuses both under manual optimization. A future config key that reaches the Trainer
    lands here, and such a run trains unfused instead of silently without it.
    """
    found = []
    if trainer.gradient_clip_val:
        found.append(f"gradient_clip_val={trainer.gradient_clip_val}")
    if trainer.accumulate_grad_batches != 1:
        found.append(f"accumulate_grad_batches={trainer.accumulate_grad_batches}")
    return found


def updates_per_step(trainer: pl.Trainer, macs: int) -> int:
    """K: how many minibatch updates one Lightning step of `trainer` runs (1: unfused, automatic optimization).

    macs: a rough count of one update's multiply-adds (per worker: each rank's share of the global batch).
    One device or DDP (Ray's strategy is Lightning's DDP), in fp32 on CPUs: the fused steps run both.
    """
    fp32_cpu = isinstance(trainer.accelerator, CPUAccelerator) and trainer.precision == "32-true"
    known_strategy = isinstance(trainer.strategy, (SingleDeviceStrategy, DDPStrategy))
    if not (known_strategy and fp32_cpu) or macs >= FUSED_STEP_MACS:
        return 1
    settings = unfusable_settings(trainer)
    if settings:
        logger.warning(
            "one Lightning step per minibatch (not fused): the fused steps cannot apply %s", ", ".join(settings)
        )
        return 1
    return min(MAX_FUSED, math.ceil(FUSED_STEP_MACS / max(1, macs)))


def fuse(module: TaskModule) -> FusedTaskModule:
    """`module` as a FusedTaskModule: the same hyperparameters and the same (already drawn) weights."""
    # Building the copy draws fresh initial weights; fork_rng keeps that from moving the RNG the run goes
    # on with, so a fused run draws the same dropout masks as an unfused one.
    with torch.random.fork_rng(devices=[]):
        fused = FusedTaskModule(**module.hparams)
    fused.load_state_dict(module.state_dict())
    return fused


def count_update(trainer: pl.Trainer) -> None:
    """Count one optimizer update in `trainer.global_step`, as Lightning's LightningOptimizer.step does.

    The one write to Lightning's private state: under manual optimization `global_step` is the manual loop's
    optimizer-step progress, which Lightning advances only around LightningOptimizer.step, a chain whose
    per-update cost is the one fused steps exist to avoid. tests/test_fused_steps.py fails naming this
    attribute if a Lightning release moves it (and checks global_step against unfused runs).
    """
    progress = trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
    progress.increment_ready()
    progress.increment_completed()


class FusedTaskModule(TaskModule):
    """A TaskModule whose every training batch is a group of minibatches (TensorBatches(group=K)), one update each."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.automatic_optimization = False
        self._clips = False  # whether configure_gradient_clipping is overridden (checked when the fit starts)
        # DDP's process group when rank 0 broadcasts the buffers (not the wrapper: as an attribute of this module
        # it would become a submodule of its own child)
        self._buffers_group: Any = None
        self._updates_in_epoch = 0  # the unfused loop's batch index, for step-interval schedulers

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        # Training groups hold slices of tensors already on the device (validation batches are plain pairs).
        if batch and isinstance(batch[0], tuple) and all(t.device == device for pair in batch for t in pair):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_fit_start(self) -> None:
        if len(self.trainer.optimizers) != 1:
            raise FusedStepsUnsupported(f"fused steps run one optimizer, got {len(self.trainer.optimizers)}")
        for config in self.trainer.lr_scheduler_configs:
            # Lightning steps it after validation, with a metric, and only under automatic optimization (which
            # also drops the scheduler config's reduce_on_plateau flag, hence the type).
            if isinstance(config.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                raise FusedStepsUnsupported(
                    f"fused steps cannot step a {type(config.scheduler).__name__} schedule (Lightning steps it "
                    "after validation, under automatic optimization only): make updates_per_step in "
                    "pipelines/training/fused.py return 1 for it, or step it in FusedTaskModule"
                )
        self._clips = is_overridden("configure_gradient_clipping", self, parent=pl.LightningModule)
        model = self.trainer.strategy.model  # wrapped by now: the strategy's setup runs before on_fit_start
        broadcasts = isinstance(model, DistributedDataParallel) and model.broadcast_buffers
        self._buffers_group = model.process_group if broadcasts else None

    def training_step(self, group: tuple[Batch, ...], batch_idx: int) -> None:
        """K updates, as Lightning's automatic optimization runs them one per step (same math, same order)."""
        if batch_idx == 0:
            self._updates_in_epoch = 0
        trainer, epoch = self.trainer, self.current_epoch
        optimizer = trainer.optimizers[0]  # the raw optimizer: its state is what the checkpoint holds
        losses, rows = [], []
        for x, y in group:
            update = self._updates_in_epoch  # the batch_idx an unfused step would have

            def closure(x: torch.Tensor = x, y: torch.Tensor = y, update: int = update) -> torch.Tensor:
                loss, _ = self._loss(x, y)
                self._backward(trainer, optimizer, loss, epoch, update)
                losses.append(loss.detach())
                return loss

            self.optimizer_step(epoch, update, optimizer, closure)
            count_update(trainer)
            self._updates_in_epoch += 1
            self._step_schedulers("step", self._updates_in_epoch)
            rows.append(len(x))
        self._broadcast_buffers()
        # The same weighted mean as K updates, in one metric update (torchmetrics checks NaNs per call).
        weights = torch.tensor(rows, dtype=self.train_loss.dtype, device=losses[0].device)
        self.train_loss.update(torch.stack(losses), weight=weights)
        if trainer.is_last_batch:
            self.log("train/loss", self.train_loss, on_step=False, on_epoch=True)
            # Lightning steps epoch schedulers right after an epoch's last batch, but not under manual optimization.
            self._step_schedulers("epoch", epoch + 1)

    def _backward(
        self, trainer: pl.Trainer, optimizer: torch.optim.Optimizer, loss: torch.Tensor, epoch: int, update: int
    ) -> None:
        """What automatic optimization's closure runs after the forward, and its precision plugin after the closure.

        The hooks are called directly: Lightning's generic dispatch (a profiler section and a state key per
        callback, per hook) and its LightningOptimizer's step cost ~18 % of the default FNN's update
        (BENCHMARKS.md); for fp32 they do nothing else. The strategy's pre/post_backward are called as
        `Strategy.backward` calls them: under DDP, pre_backward readies the reducer, so this backward
        all-reduces the gradients (DDP's own forward readies it only once the whole Lightning step has
        returned); on one device both do nothing.
        """
        strategy, callbacks = trainer.strategy, trainer.callbacks
        for callback in callbacks:
            callback.on_before_zero_grad(trainer, self, optimizer)
        self.on_before_zero_grad(optimizer)
        self.optimizer_zero_grad(epoch, update, optimizer)
        strategy.pre_backward(loss)
        for callback in callbacks:
            callback.on_before_backward(trainer, self, loss)
        self.on_before_backward(loss)
        self.backward(loss)
        for callback in callbacks:
            callback.on_after_backward(trainer, self)
        self.on_after_backward()
        strategy.post_backward(loss)
        for callback in callbacks:
            callback.on_before_optimizer_step(trainer, self, optimizer)
        self.on_before_optimizer_step(optimizer)
        if self._clips:  # where automatic optimization clips: after those hooks, before the step
            self.configure_gradient_clipping(optimizer)

    def _broadcast_buffers(self) -> None:
        """Rank 0's buffers to every rank (DDP's broadcast_buffers, once per group: see the module's docstring)."""
        if self._buffers_group is None:
            return
        for buffer in self.buffers():  # a few (BatchNorm's stats, a loss's class weights): one broadcast each
            torch.distributed.broadcast(buffer, group=self._buffers_group, group_src=0)

    def _step_schedulers(self, interval: str, count: int) -> None:
        """Step the `interval` schedulers due at the count-th batch/epoch (1-based), by Lightning's frequency rule."""
        for config in self.trainer.lr_scheduler_configs:  # plateau schedules were refused at fit start
            if config.interval == interval and count % config.frequency == 0:
                self.lr_scheduler_step(config.scheduler, None)
