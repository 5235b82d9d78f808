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


def test_bf16_channels_last_cnn_trains_on_the_gpu():
    import pytorch_lightning as pl

    from models.task_module import TaskModule
    from pipelines.training.batches import TensorBatches

    torch.manual_seed(0)
    spec = {
        "family": "cnn",
        "input_shape": [1, 28, 28],
        "out_features": 10,
        "filters": [32, 64],
        "dense": [128],
        "activation": "relu",
        "dropout": 0.0,
    }
    module = TaskModule(spec, {"optimizer": "adam", "lr": 1e-3}, "multiclass", "cce", 10).to(
        memory_format=torch.channels_last
    )
    x = torch.randn(2048, 1, 28, 28, device="cuda").contiguous(memory_format=torch.channels_last)
    y = (x.mean(dim=(1, 2, 3)) > 0).long() * 3  # a learnable rule
    trainer = pl.Trainer(
        accelerator="gpu",
        devices=1,
        precision="bf16-mixed",
        max_epochs=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    trainer.fit(module, TensorBatches(x, y, 256, shuffle=True), TensorBatches(x, y, 1024, shuffle=False))
    assert trainer.callback_metrics["val/accuracy"] > 0.9


@pytest.mark.parametrize("family", ["lstm", "gru"])
def test_recurrent_families_run_on_cudnn(family):
    from models import create_model

    assert torch.backends.cudnn.is_available() and torch.backends.cudnn.enabled
    net = create_model(family, out_features=500, hidden_size=256, num_layers=2, vocab_size=500).cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = net(torch.randint(0, 500, (64, 32), device="cuda"))
    out.float().sum().backward()
    assert out.shape == (64, 500) and all(p.grad is not None for p in net.parameters())


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs for a multi-worker NCCL run")
def test_two_gpu_workers_train_with_nccl(in_tmp):
    from pipelines.training import cluster, fit
    from tests.test_fault_tolerance import digits_job

    job = digits_job(epochs=3)
    job.use_gpu, job.precision = True, "bf16-mixed"
    cluster.ensure_ray()
    try:
        outcome = fit.fit(job, fit.Scaling(num_workers=2, use_gpu=True), str(in_tmp / "ray"), "gpu-test")
    finally:
        cluster.shutdown_ray()
    assert outcome.best_metrics["val/accuracy"] > 0.9 and len(outcome.placement) == 2
