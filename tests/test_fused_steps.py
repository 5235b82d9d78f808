"""Fused steps (training.fused: FusedTaskModule + TensorBatches(group=K)) train exactly as one Lightning step per
minibatch: the same minibatches in the same order, one optimizer update each, the same weights, optimizer and
scheduler state, epoch metrics and resume. In-process Lightning on a hand-built Trainer, no Ray needed (the
worker's own training function: tests/test_fused_worker.py)."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from pipelines.training.batches import TensorBatches
from pipelines.training.fused import MAX_FUSED, fuse, updates_per_step

# 1000 rows at batch 64: 16 minibatches, the last of 40 rows; groups of 5 leave a last group of one minibatch.
ROWS, BATCH, GROUP = 1000, 64, 5
SPEC = {"family": "fnn", "input_shape": [10], "out_features": 2, "hidden": [64, 32], "activation": "relu"}
# Dropout checks that the random draws happen in the same order; the step schedule that epoch-end LR steps happen.
OPTIM = {"optimizer": "adam", "lr": 1e-2, "lr_schedule": "step", "lr_step_size": 1, "lr_gamma": 0.5}


def data(rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(rows, 10, generator=g)
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0).long()


def train(
    group: int,
    epochs: int,
    resume: str | None = None,
    save: str | None = None,
    dropout: float = 0.1,
    class_weights: list[float] | None = None,
):
    """A TaskModule fitted the way the worker fits it (its callbacks, our batches), fused when group > 1."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import EarlyStopping

    import models  # noqa: F401  (registers the families)
    from models.task_module import TaskModule
    from pipelines.training.callbacks import EpochHistory, FiniteLoss

    class SaveAtEpochEnd(pl.Callback):  # where CandidateReport saves the resume checkpoint
        def on_train_epoch_end(self, trainer, pl_module):
            if save:
                trainer.save_checkpoint(save, weights_only=False)

    hooks = HookCounts()

    pl.seed_everything(0, verbose=False)
    module = TaskModule({**SPEC, "dropout": dropout}, OPTIM, "multiclass", "cce", 2, class_weights)
    if group > 1:
        module = fuse(module)
    x, y = data(ROWS)
    train_batches = TensorBatches(x, y, BATCH, shuffle=True, seed=3, group=group)
    module.train_batches = train_batches
    history = EpochHistory()
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        callbacks=[EarlyStopping("val/loss", patience=10), FiniteLoss("t/fnn", 1e-2), history, SaveAtEpochEnd(), hooks],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
        num_sanity_val_steps=0,
    )
    vx, vy = data(300)
    trainer.fit(module, train_batches, TensorBatches(vx, vy, 1024, shuffle=False), ckpt_path=resume)
    return module, trainer, history.rows, hooks.counts


class HookCounts(pl.Callback):
    """How often Lightning called each per-update hook."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def _count(self, hook: str) -> None:
        self.counts[hook] = self.counts.get(hook, 0) + 1

    def on_before_zero_grad(self, trainer, pl_module, optimizer) -> None:
        self._count("on_before_zero_grad")

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self._count("on_before_backward")

    def on_after_backward(self, trainer, pl_module) -> None:
        self._count("on_after_backward")

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self._count("on_before_optimizer_step")


def assert_same_training(a, b, same_hooks: bool = True) -> None:
    (module_a, trainer_a, rows_a, hooks_a), (module_b, trainer_b, rows_b, hooks_b) = a, b
    if same_hooks:  # (a resumed run calls them in its own epochs only)
        assert hooks_a == hooks_b  # Lightning's per-update hooks, once per update both ways
    for (name, pa), pb in zip(module_a.state_dict().items(), module_b.state_dict().values()):
        assert torch.equal(pa, pb), name  # bit for bit: the same updates in the same order
    opt_a, opt_b = trainer_a.optimizers[0].state_dict(), trainer_b.optimizers[0].state_dict()
    assert opt_a["param_groups"] == opt_b["param_groups"]  # lr included: the scheduler stepped alike
    for key, state in opt_a["state"].items():
        for field, value in state.items():
            assert torch.equal(value, opt_b["state"][key][field]), (key, field)
    assert trainer_a.global_step == trainer_b.global_step
    assert [r["epoch"] for r in rows_a] == [r["epoch"] for r in rows_b]
    for ra, rb in zip(rows_a, rows_b):
        assert ra["val/loss"] == rb["val/loss"]
        assert ra["train/loss"] == pytest.approx(rb["train/loss"], rel=1e-6)  # one sum of K terms vs K sums


def test_fused_steps_give_the_same_training_as_one_lightning_step_per_minibatch():
    unfused, fused = train(1, 3), train(GROUP, 3)
    assert unfused[0].automatic_optimization and not fused[0].automatic_optimization
    assert fused[1].global_step == 3 * 16  # one update per 64-row minibatch, not per Lightning step
    per_update = ("on_before_zero_grad", "on_before_backward", "on_after_backward", "on_before_optimizer_step")
    assert fused[3] == dict.fromkeys(per_update, 3 * 16)
    assert fused[1].optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-2 * 0.5**3)
    assert_same_training(fused, unfused)


def test_class_weights_reach_the_fused_module_and_train_as_unfused():
    # fuse() rebuilds the module from its hyperparameters: the class weights must travel with them.
    weights = [0.6, 2.5]
    fused = train(GROUP, 2, class_weights=weights)
    assert fused[0].hparams.class_weights == weights
    assert torch.equal(fused[0].loss_fn.weight, torch.tensor(weights))
    assert_same_training(fused, train(1, 2, class_weights=weights))
    unweighted = train(GROUP, 2)[0].state_dict()
    assert not torch.equal(fused[0].state_dict()["net.net.0.weight"], unweighted["net.net.0.weight"])


def test_a_fused_run_resumed_from_its_epoch_checkpoint_ends_as_an_unbroken_one(tmp_path):
    # No dropout: a Lightning checkpoint does not hold the RNG state, so after a resume the dropout draws
    # differ from an unbroken run's (fused or not).
    ckpt = str(tmp_path / "last.ckpt")
    _, first, _, _ = train(GROUP, 2, save=ckpt, dropout=0.0)
    saved = torch.load(ckpt, weights_only=False)
    # The checkpoint holds the real optimizer's state (Adam's moments for every parameter), as unfused does.
    assert saved["optimizer_states"][0]["state"].keys() == first.optimizers[0].state_dict()["state"].keys()
    assert saved["optimizer_states"][0]["state"][0]["step"] == 2 * 16
    assert saved["global_step"] == 2 * 16
    resumed = train(GROUP, 4, resume=ckpt, dropout=0.0)
    assert resumed[3]["on_before_optimizer_step"] == 2 * 16  # the two epochs after the resume
    assert_same_training(resumed, train(GROUP, 4, dropout=0.0), same_hooks=False)
    assert_same_training(resumed, train(1, 4, dropout=0.0), same_hooks=False)


def test_batch_groups_are_consecutive_minibatches_of_the_same_order():
    x = torch.arange(ROWS).float()
    plain = TensorBatches(x, x, BATCH, shuffle=True, seed=2)
    grouped = TensorBatches(x, x, BATCH, shuffle=True, seed=2, group=GROUP)
    assert len(plain) == 16 and len(grouped) == 4
    minibatches = [x for g in grouped for x, _ in g]
    assert [b.tolist() for b in minibatches] == [b[0].tolist() for b in plain]
    with pytest.raises(ValueError, match="group must be at least 1"):
        TensorBatches(x, x, BATCH, shuffle=True, group=0)


def cpu_trainer(**settings) -> pl.Trainer:
    quiet = {"enable_progress_bar": False, "enable_model_summary": False, "enable_checkpointing": False}
    return pl.Trainer(accelerator="cpu", devices=1, logger=False, **quiet, **settings)


def test_steps_below_a_billion_multiply_adds_of_cpu_workers_in_fp32_are_fused_on_one_device_or_under_ddp():
    default_fnn = 2850 * BATCH  # 10-64-32-2: 2 850 parameters, x 64 rows
    bench_fnn = 82_946 * 512  # `make bench`'s 64-256-256-2 at batch 512: ~42 M multiply-adds a step
    fp32 = cpu_trainer()
    assert updates_per_step(fp32, default_fnn) == MAX_FUSED  # the cap bounds a group's rows
    assert updates_per_step(fp32, bench_fnn) == 24  # ~1 G multiply-adds per Lightning step
    # DDP (Ray's strategy is Lightning's): each update still all-reduces (tests/test_fused_ddp.py); K counts a
    # rank's own share of the step, here the bench's 2 workers x 256 rows.
    assert updates_per_step(cpu_trainer(strategy="ddp"), bench_fnn // 2) == 48
    assert updates_per_step(cpu_trainer(precision="bf16-mixed"), default_fnn) == 1
    assert updates_per_step(fp32, 1_000_000_000) == 1  # a large step: Lightning's cost is small beside it


@pytest.mark.parametrize(
    "settings", [{"gradient_clip_val": 0.5}, {"accumulate_grad_batches": 2}], ids=["clipping", "accumulation"]
)
def test_trainer_step_settings_that_only_automatic_optimization_applies_train_unfused(settings, caplog):
    # Lightning refuses both under manual optimization: a run that asks for them takes one step per minibatch.
    with caplog.at_level("WARNING", logger="pipelines.training.fused"):
        assert updates_per_step(cpu_trainer(**settings), 2850 * BATCH) == 1
    (key, value), *_ = settings.items()
    assert f"not fused): the fused steps cannot apply {key}={value}" in caplog.text


def step_interval_schedule(self):
    """configure_optimizers with an LR step every 3 updates (what a warm-up or one-cycle schedule looks like)."""
    optimizer = torch.optim.Adam(self.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.9)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 3}}


def test_step_interval_schedules_step_at_the_same_updates_fused_and_unfused(monkeypatch):
    from models.task_module import TaskModule

    monkeypatch.setattr(TaskModule, "configure_optimizers", step_interval_schedule)
    unfused, fused = train(1, 2), train(GROUP, 2)
    assert fused[1].optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-2 * 0.9 ** (2 * (16 // 3)))
    assert_same_training(fused, unfused)


def test_a_module_that_clips_its_gradients_is_clipped_at_the_same_point_fused_and_unfused(monkeypatch):
    from models.task_module import TaskModule

    def clip_hard(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        self.clip_gradients(optimizer, gradient_clip_val=1e-3, gradient_clip_algorithm="norm")

    monkeypatch.setattr(TaskModule, "configure_gradient_clipping", clip_hard)
    clipped = train(GROUP, 2)
    assert_same_training(clipped, train(1, 2))
    monkeypatch.undo()
    unclipped = train(GROUP, 2)
    assert not torch.equal(clipped[0].state_dict()["net.net.0.weight"], unclipped[0].state_dict()["net.net.0.weight"])


def test_a_plateau_schedule_is_refused_when_a_fused_fit_starts(monkeypatch):
    from models.task_module import TaskModule
    from pipelines.training.fused import FusedStepsUnsupported

    def plateau(self):
        optimizer = torch.optim.Adam(self.parameters(), lr=1e-2)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss"}}

    monkeypatch.setattr(TaskModule, "configure_optimizers", plateau)
    with pytest.raises(FusedStepsUnsupported, match="cannot step a ReduceLROnPlateau schedule"):
        train(GROUP, 1)


def with_key(path: str, value) -> dict:
    """The default params with `value` set at the dotted `path`."""
    from pipelines.config import PipelineParams

    data = PipelineParams().model_dump(mode="json")
    *parents, leaf = path.split(".")
    node = data
    for part in parents:
        node = node[part]
    node[leaf] = value
    return data


@pytest.mark.parametrize(
    "path, value, words",
    [
        ("datasets.tabular.train.candidates.fnn-relu.gradient_clip_val", 1.0, "unknown key"),
        ("datasets.tabular.train.accumulate_grad_batches", 4, "unknown key"),
        ("train.gradient_clip_val", 1.0, "unknown key"),
        ("datasets.tabular.train.candidates.fnn-relu.lr_schedule", "onecycle", "'none', 'cosine' or 'step'"),
        ("datasets.tabular.train.search", {"candidate": "fnn-relu", "space": {"gradient_clip_val": {}}}, "space"),
    ],
)
def test_the_config_can_ask_for_no_step_level_feature_the_fused_steps_would_skip(path, value, words):
    # Today's schema has no gradient clipping, no accumulation and only per-epoch LR schedules (which the fused
    # steps step as Lightning does); a key asking for one is refused naming it, before anything trains (exit 2).
    # A future key that reaches the Trainer makes the run unfused (fused.unfusable_settings).
    from pipelines.config import validate_params
    from pipelines.errors import PipelineInputError

    with pytest.raises(PipelineInputError) as err:
        validate_params(with_key(path, value), "params.yaml")
    assert f"params.yaml: {path}" in str(err.value) and words in str(err.value), str(err.value)


def test_a_modules_optimizer_step_hook_runs_at_every_update_with_the_same_global_step(monkeypatch):
    from models.task_module import TaskModule

    def warm_up(self, epoch, batch_idx, optimizer, optimizer_closure=None):
        for group in optimizer.param_groups:  # a linear warm-up over the first 20 updates, by global_step
            group["lr"] = 1e-2 * min(1.0, (self.trainer.global_step + 1) / 20)
        optimizer.step(closure=optimizer_closure)

    monkeypatch.setattr(TaskModule, "optimizer_step", warm_up)
    fused, unfused = train(GROUP, 2), train(1, 2)
    assert_same_training(fused, unfused)
    monkeypatch.undo()
    assert not torch.equal(
        fused[0].state_dict()["net.net.0.weight"], train(GROUP, 2)[0].state_dict()["net.net.0.weight"]
    )


def test_global_step_is_the_manual_loops_step_progress_where_fused_steps_count_their_updates():
    # fused.count_update writes this private Lightning attribute: a release that moves it fails here, by name.
    trainer = cpu_trainer()
    loop = trainer.fit_loop.epoch_loop
    assert hasattr(loop, "manual_optimization"), "Lightning moved trainer.fit_loop.epoch_loop.manual_optimization"
    progress = loop.manual_optimization
    assert hasattr(progress, "optim_step_progress"), "Lightning moved manual_optimization.optim_step_progress"
    # trainer.global_step reads it under manual optimization (the equal global steps above check that).
