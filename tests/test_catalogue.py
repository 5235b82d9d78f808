"""Contract tests over every registered model family."""
import pytest
import torch

import models
from models.catalogue import create_model, list_models, supported_tasks
from models.task_module import TaskModule
from models.tasks import DEFAULT_LOSS, loss_target, make_loss, output_size, resolve_loss

N_FEATURES, N_CLASSES = 6, 3


def spec_for(family: str, task: str) -> dict:
    loss = DEFAULT_LOSS[task]
    n_classes = {"regression": None, "binary": 2, "multiclass": N_CLASSES}[task]
    return {
        "family": family,
        "in_features": N_FEATURES,
        "out_features": output_size(task, loss, n_classes),
        "hidden": [16, 16],
        "activation": "tanh",
        "dropout": 0.0,
    }


def batch_for(task: str, n: int = 32):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, N_FEATURES, generator=g)
    if task == "regression":
        return x, torch.randn(n, 1, generator=g)
    return x, torch.randint(0, 2 if task == "binary" else N_CLASSES, (n,), generator=g)


CASES = [(family, task) for family in list_models() for task in supported_tasks(family)]


def test_catalogue_lists_the_families():
    assert "fnn" in models.list_models()
    with pytest.raises(KeyError, match="unknown model family"):
        create_model("nope")


@pytest.mark.parametrize("family, task", CASES)
def test_forward_backward_every_parameter_gets_a_finite_gradient(family, task):
    torch.manual_seed(0)
    net = create_model(family, **spec_for(family, task))
    x, y = batch_for(task)
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
    module = TaskModule(spec_for(family, task), {"optimizer": "adam", "lr": 1e-2}, task, loss_name, {"regression": None, "binary": 2, "multiclass": N_CLASSES}[task])
    opt = module.configure_optimizers()
    x, y = batch_for(task, 16)
    first = None
    for _ in range(300):
        opt.zero_grad()
        loss, _ = module._loss(x, y)
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.05 * first, (first, loss.item())


@pytest.mark.parametrize("task, loss, ok", [("multiclass", "bce", False), ("regression", "cce", False), ("binary", "cce", True), ("binary", "mse", False)])
def test_loss_and_task_combinations_are_checked(task, loss, ok):
    if ok:
        assert resolve_loss(task, loss) == loss
    else:
        with pytest.raises(ValueError, match=f"loss '{loss}' cannot train"):
            resolve_loss(task, loss, 10 if task == "multiclass" else None)
