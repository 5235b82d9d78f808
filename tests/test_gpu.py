"""The GPU path: bf16 autocast, channels-last CNNs, cuDNN RNNs, multi-worker NCCL training.

Marked `gpu` and skipped, with the reason shown, where no CUDA GPU is present
(`pytest -rs` lists the skips). On a GPU machine: `pytest -m gpu`.
"""

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(), reason="no CUDA GPU on this machine: the GPU path is not exercised here"
    ),
]


def _splits(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose class (0 or 3) is the sign of their mean brightness: a rule to learn, not to memorize."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 28, 28, generator=g) + 0.2 * torch.randn(n, 1, 1, 1, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0).long() * 3
    return x.cuda().contiguous(memory_format=torch.channels_last), y.cuda()


def test_bf16_channels_last_cnn_learns_on_the_gpu():
    """Trained on one split, scored on images it never saw: learning, not memorization."""
    import lightning.pytorch as pl

    from models.cnn import CnnCandidate
    from models.task_module import TaskModule
    from pipelines.training.batches import TensorBatches

    torch.manual_seed(0)
    cand = CnnCandidate(family="cnn", filters=[32, 64], dense=[128], dropout=0.0)
    spec = cand.model_spec({"input_shape": [1, 28, 28]}, 10)
    module = TaskModule(spec, {"optimizer": "adam", "lr": 1e-3}, "multiclass", "cce", 10).to(
        memory_format=torch.channels_last
    )
    train_x, train_y = _splits(4096, seed=0)
    val_x, val_y = _splits(1024, seed=1)
    test_x, test_y = _splits(1024, seed=2)
    trainer = pl.Trainer(
        accelerator="gpu",
        devices=1,
        precision="bf16-mixed",
        max_epochs=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    trainer.fit(module, TensorBatches(train_x, train_y, 256, shuffle=True), TensorBatches(val_x, val_y, 1024))
    assert trainer.callback_metrics["val/accuracy"] > 0.9
    assert next(module.net.parameters()).is_cuda
    module.eval()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        predicted = module.net(test_x).argmax(dim=1)
    majority = max((test_y == 0).float().mean().item(), (test_y == 3).float().mean().item())
    accuracy = (predicted == test_y).float().mean().item()
    assert accuracy > 0.9 and accuracy > majority + 0.3, (accuracy, majority)


@pytest.mark.parametrize("family", ["lstm", "gru"])
def test_recurrent_families_dispatch_to_cudnn(family):
    """The recurrent layer runs as cuDNN's fused RNN (forward and backward), not a per-step loop."""
    from torch.profiler import ProfilerActivity, profile

    from models import create_model
    from models.rnn import RnnCandidate

    spec = RnnCandidate(family=family, hidden_size=256, num_layers=2).model_spec(
        {"input_shape": [32], "vocab_size": 500}, 500
    )
    net = create_model(family, **spec).cuda()
    tokens = torch.randint(0, 500, (64, 32), device="cuda")
    assert torch.backends.cudnn.is_acceptable(net.embed(tokens))  # the RNN's input qualifies for cuDNN
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = net(tokens)
        out.float().sum().backward()
        torch.cuda.synchronize()
    ops = {event.name for event in prof.events()}
    assert "aten::_cudnn_rnn" in ops, sorted(o for o in ops if "rnn" in o.lower() or "lstm" in o.lower())
    assert "aten::_cudnn_rnn_backward" in ops
    assert out.shape == (64, 500) and all(p.grad is not None for p in net.parameters())


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs for a multi-worker NCCL run")
def test_two_gpu_workers_train_with_nccl(in_tmp):
    from pipelines.training import cluster, fit
    from pipelines.training.job import Scaling
    from tests.test_fault_tolerance import digits_job

    job = digits_job(epochs=3)
    job.use_gpu, job.precision = True, "bf16-mixed"
    cluster.ensure_ray()
    try:
        outcome = fit.fit(job, Scaling(num_workers=2, use_gpu=True), str(in_tmp / "ray"), "gpu-test")
    finally:
        cluster.shutdown_ray()
    assert outcome.best_metrics["val/accuracy"] > 0.9 and len(outcome.placement) == 2
