"""Contract tests over every registered model family."""

import pytest
import torch

import models
from models.catalogue import create_model, list_models, supported_tasks
from models.catalogue import family as family_of
from models.task_module import TaskModule
from models.tasks import DEFAULT_LOSS, loss_target, make_loss, output_size, resolve_loss

N_CLASSES, VOCAB = 3, 40
# The input each task's data has after prepare (see pipelines/modalities).
INPUT_SHAPES = {"fnn": [6], "cnn": [1, 8, 8]}
SEQ_SHAPES = {"next_word": [5], "forecast": [10]}


def candidate(family: str):
    """The family's default candidate from the real config schema, without dropout (deterministic overfit)."""
    cls = family_of(family).candidate
    return cls(family=family, dropout=0.0, hidden=[16, 16]) if family == "fnn" else cls(family=family, dropout=0.0)


def n_classes_for(task: str) -> int | None:
    return {"binary": 2, "multiclass": N_CLASSES, "next_word": VOCAB}.get(task)


def spec_for(family: str, task: str) -> dict:
    meta = {
        "input_shape": SEQ_SHAPES.get(task, INPUT_SHAPES.get(family, [6])),
        "vocab_size": VOCAB if task == "next_word" else None,
    }
    return candidate(family).model_spec(meta, output_size(task, DEFAULT_LOSS[task], n_classes_for(task)))


def batch_for(family: str, task: str, n: int = 32):
    g = torch.Generator().manual_seed(0)
    shape = SEQ_SHAPES.get(task, INPUT_SHAPES.get(family, [6]))
    x = (
        torch.randint(0, VOCAB, (n, *shape), generator=g)
        if task == "next_word"
        else torch.randn(n, *shape, generator=g)
    )
    if task in ("regression", "forecast"):
        return x, torch.randn(n, 1, generator=g)
    return x, torch.randint(0, n_classes_for(task), (n,), generator=g)


CASES = [(family, task) for family in list_models() for task in supported_tasks(family)]


def test_catalogue_lists_the_families():
    assert models.list_models() == ["cnn", "fnn", "gru", "lstm"]
    with pytest.raises(KeyError, match="unknown model family"):
        create_model("nope")


@pytest.mark.parametrize("family", list_models())
def test_the_candidate_gives_exactly_the_builders_arguments(family):
    """A config key and its builder cannot drift apart: the spec holds exactly the builder's keywords."""
    import inspect

    fam = family_of(family)
    spec = spec_for(family, fam.tasks[0])
    assert spec["family"] == family
    assert set(spec) - {"family"} == set(inspect.signature(fam.builder).parameters)


def test_a_builder_refuses_an_unknown_argument():
    spec = spec_for("fnn", "binary")
    with pytest.raises(TypeError, match="hiden"):
        create_model("fnn", **spec, hiden=[3])
    with pytest.raises(ValueError, match="spec of family 'fnn'"):
        create_model("cnn", **spec)


@pytest.mark.parametrize("family, task", CASES)
def test_forward_backward_every_parameter_gets_a_finite_gradient(family, task):
    torch.manual_seed(0)
    net = create_model(family, **spec_for(family, task))
    x, y = batch_for(family, task)
    loss_name = DEFAULT_LOSS[task]
    loss = make_loss(loss_name)(net(x), loss_target(loss_name, y))
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in net.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


@pytest.mark.parametrize("family, task", CASES)
def test_overfits_a_few_batches(family, task):
    torch.manual_seed(0)
    loss_name = DEFAULT_LOSS[task]
    module = TaskModule(spec_for(family, task), {"optimizer": "adam", "lr": 1e-2}, task, loss_name, n_classes_for(task))
    opt = module.configure_optimizers()
    x, y = batch_for(family, task, 16)
    first = None
    for _ in range(300):  # stops as soon as it has overfit: most families need far fewer steps
        opt.zero_grad()
        loss, _ = module._loss(x, y)
        first = first if first is not None else loss.item()
        if loss.item() < 0.05 * first:
            break
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 * first, (first, loss.item())


@pytest.mark.parametrize(
    "task, loss, ok",
    [
        ("multiclass", "bce", False),
        ("regression", "cce", False),
        ("binary", "cce", True),
        ("binary", "mse", False),
        ("next_word", "bce", False),
        ("forecast", "cce", False),
        ("next_word", "cce", True),
    ],
)
def test_loss_and_task_combinations_are_checked(task, loss, ok):
    if ok:
        assert resolve_loss(task, loss) == loss
    else:
        with pytest.raises(ValueError, match=f"loss '{loss}' cannot train"):
            resolve_loss(task, loss, 10 if task == "multiclass" else None)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop"])
@pytest.mark.parametrize("schedule", ["none", "cosine", "step"])
def test_every_optimizer_and_schedule_trains(optimizer, schedule):
    import lightning.pytorch as pl

    torch.manual_seed(0)
    optim = {
        "optimizer": optimizer,
        "lr": 0.05 if optimizer == "sgd" else 1e-2,
        "momentum": 0.9,
        "lr_schedule": schedule,
        "lr_step_size": 1,
        "lr_gamma": 0.5,
    }
    module = TaskModule(spec_for("fnn", "multiclass"), optim, "multiclass", "cce", N_CLASSES)
    x, y = batch_for("fnn", "multiclass", 64)
    trainer = pl.Trainer(
        max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    before = module._loss(x, y)[0].item()
    from pipelines.training.batches import TensorBatches

    trainer.fit(
        module,
        train_dataloaders=TensorBatches(x, y, 8, shuffle=True),
        val_dataloaders=TensorBatches(x, y, 64, shuffle=False),
    )
    assert module._loss(x, y)[0].item() < before
    lrs = [group["lr"] for group in trainer.optimizers[0].param_groups]
    if schedule == "step":
        assert lrs[0] == pytest.approx(optim["lr"] * 0.5**3)
    elif schedule == "none":
        assert lrs[0] == optim["lr"]
    else:
        assert lrs[0] < optim["lr"]


def test_a_builder_with_a_catch_all_or_a_candidate_of_another_family_is_refused():
    from models.catalogue import register_family
    from models.fnn import FnnCandidate

    def catch_all(*, hidden: list[int], **_: object):
        raise AssertionError("never built")

    with pytest.raises(ValueError, match="keyword-only arguments"):
        register_family("catch-all", candidate=FnnCandidate, modalities=("table",), tasks=("binary",))(catch_all)
    with pytest.raises(ValueError, match="FnnCandidate.family must be a Literal that includes 'mlp'"):
        register_family("mlp", candidate=FnnCandidate, modalities=("table",), tasks=("binary",))(models.fnn.build_fnn)
    assert "catch-all" not in list_models() and "mlp" not in list_models()
