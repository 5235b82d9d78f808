"""The LightningModule: training logic around any architecture in the catalogue."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torchmetrics

from models.catalogue import create_model
from models.tasks import get_task, loss_target, make_loss, update_val_score, val_score_metric


def build_scheduler(optimizer: torch.optim.Optimizer, optim: dict[str, Any], max_epochs: int):
    """Optional per-epoch learning-rate schedule (None when lr_schedule is 'none')."""
    kind = optim.get("lr_schedule", "none")
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, max_epochs))
    if kind == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=optim.get("lr_step_size", 10), gamma=optim.get("lr_gamma", 0.5)
        )
    return None


def build_optimizer(params, optim: dict[str, Any]) -> torch.optim.Optimizer:
    name, lr, wd = optim["optimizer"], optim["lr"], optim.get("weight_decay", 0.0)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=optim.get("momentum", 0.9), weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=optim.get("momentum", 0.0), weight_decay=wd)
    raise ValueError(f"unknown optimizer {name!r}")


class TaskModule(pl.LightningModule):
    """Hyperparameters are plain dicts (no pickled modules), so checkpoints load weights-only."""

    def __init__(
        self,
        model_spec: dict[str, Any],
        optim: dict[str, Any],
        task: str,
        loss: str,
        n_classes: int | None = None,
        class_weights: list[float] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        args = {k: v for k, v in model_spec.items() if k != "family"}  # the catalogue's key is not an argument
        self.net = create_model(model_spec["family"], **args)
        self.task, self.loss_name = task, loss
        # One weight per class (computed once from the training split by the driver, so every worker of a
        # group weighs alike); the validation loss is weighted too, so early stopping watches what is optimized.
        self.loss_fn = make_loss(loss, class_weights)
        # torchmetrics objects sync across DDP ranks by themselves at epoch end.
        self.val_loss = torchmetrics.MeanMetric()
        self.train_loss = torchmetrics.MeanMetric()
        self.kind = get_task(task)
        self.score_name = self.kind.val_score
        self.val_score = val_score_metric(self.kind, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        # Our batches are slices of tensors already resident on the device;
        # skip Lightning's generic (per-step, Python-level) collection walk.
        if all(isinstance(t, torch.Tensor) and t.device == device for t in batch):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def _loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self(x)
        return self.loss_fn(logits, loss_target(self.loss_name, y)), logits

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss, _ = self._loss(x, y)
        # Accumulated on-device, reduced once per epoch: no per-step host sync.
        self.train_loss.update(loss.detach(), weight=x.shape[0])
        if self.trainer.is_last_batch:
            # A logged Metric object is computed from its own state at epoch end, so one
            # log call per epoch is enough; self.log costs ~1 ms of Python per call, as
            # much as a whole small training step.
            self.log("train/loss", self.train_loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        loss, logits = self._loss(x, y)
        self.val_loss.update(loss, weight=x.shape[0])
        update_val_score(self.val_score, self.kind, self.loss_name, logits, y)
        self.log("val/loss", self.val_loss, on_epoch=True, prog_bar=True)
        self.log(self.score_name, self.val_score, on_epoch=True, prog_bar=True)

    def configure_optimizers(self):
        optimizer = build_optimizer(self.parameters(), self.hparams.optim)
        max_epochs = self.trainer.max_epochs if self._trainer is not None else 1
        scheduler = build_scheduler(optimizer, self.hparams.optim, max_epochs or 1)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
