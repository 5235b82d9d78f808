"""Framework overhead, measured: a hand-written PyTorch loop vs our train path.

Both train the same FNN on the same data with the same seed, global batch size
and epochs, on the same number of CPU threads. Steady-state throughput is
samples per second over epochs after the first, measured between consecutive
epoch starts (so it includes validation and, on our path, Ray's per-epoch
report + checkpoint). Fixed cost is everything else: Ray start, worker group
start (processes, imports, process group), teardown, and Prefect's start.

    python -m pipelines.benchmark [--rows 100000] [--epochs 6] [--workers 2]
    python -m pipelines.benchmark cnn [--source /usr/share/datasets/fashion-mnist] [--epochs 8]

The `cnn` workload trains the same CNN on Fashion-MNIST (when its IDX files are
present) both ways and reports test accuracy per epoch, time to 90 % test accuracy
and samples/s.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_data(rows: int, features: int, seed: int) -> dict[str, np.ndarray]:
    """A deterministic synthetic table that ships with scikit-learn (no download)."""
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=rows + 2048, n_features=features, n_informative=features // 2, random_state=seed)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    return {"train_x": x[:rows], "train_y": y[:rows].astype(np.int64), "val_x": x[rows:], "val_y": y[rows:].astype(np.int64)}


def hand_written_setup(spec: dict, lr: float, seed: int, threads: int):
    """(net, Adam, cross-entropy) for the hand-written side, seeded like our path."""
    import torch

    import models  # noqa: F401
    from models.catalogue import create_model

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    net = create_model(spec["family"], **spec)
    return net, torch.optim.Adam(net.parameters(), lr=lr), torch.nn.CrossEntropyLoss()


def hand_written_epoch(net, opt, loss_fn, x, y, batch: int, seed: int, epoch: int) -> None:
    """One epoch of the minimal loop: the same (seed, epoch) shuffle as TensorBatches, index slices."""
    import torch

    net.train()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    for i in range(0, len(x), batch):
        idx = order[i : i + batch]
        opt.zero_grad(set_to_none=True)
        loss_fn(net(x[idx]), y[idx]).backward()
        opt.step()


def hand_written_loop(data, spec, lr, batch, epochs, seed, threads) -> list[float]:
    """The minimal loop: in-memory tensors, index slices, Adam, a val pass per epoch."""
    import torch

    net, opt, loss_fn = hand_written_setup(spec, lr, seed, threads)
    x, y = torch.from_numpy(data["train_x"]), torch.from_numpy(data["train_y"])
    vx, vy = torch.from_numpy(data["val_x"]), torch.from_numpy(data["val_y"])
    starts = []
    for epoch in range(epochs):
        starts.append(time.perf_counter())
        hand_written_epoch(net, opt, loss_fn, x, y, batch, seed, epoch)
        net.eval()
        with torch.no_grad():
            (net(vx).argmax(-1) == vy).float().mean().item()
    starts.append(time.perf_counter())
    return starts


def steady_samples_per_s(starts: list[float], rows: int) -> float:
    periods = [b - a for a, b in zip(starts[1:], starts[2:])] or [starts[-1] - starts[0]]
    return rows / statistics.median(periods)


def our_path(data, spec, lr, batch, epochs, seed, workers) -> dict:
    from pipelines import ray_launcher

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.savez(tmp / "train.npz", x=data["train_x"], y=data["train_y"])
        np.savez(tmp / "val.npz", x=data["val_x"], y=data["val_y"])
        job = ray_launcher.TrainJob(
            candidate="bench", model_spec=spec, optim={"optimizer": "adam", "lr": lr}, task="multiclass", loss="cce",
            n_classes=2, data_dir=str(tmp), seed=seed, epochs=epochs, batch_size=batch, monitor="val/loss", mode="min",
            patience=epochs + 1,
        )
        ray_start = ray_launcher.ensure_ray()
        started = time.time()
        outcome = ray_launcher.fit(job, ray_launcher.Scaling(num_workers=workers), str(tmp / "ray"), "bench", keep=1)
        fit_wall = time.time() - started
        t = time.perf_counter()
        ray_launcher.shutdown_ray()
        shutdown = time.perf_counter() - t
    starts = [row["epoch_start_time"] for row in outcome.history]
    sps = steady_samples_per_s(starts + [starts[-1] + statistics.median(np.diff(starts[1:]))], len(data["train_x"]))
    return {"samples_per_s": sps, "ray_start_s": ray_start, "fit_wall_s": fit_wall, "shutdown_s": shutdown, "epochs": len(starts)}


def prefect_start_seconds() -> float:
    """Wall time of a one-task flow against Prefect's embedded (ephemeral) API."""
    code = "from prefect import flow, task\n@task\ndef t(): return 1\n@flow\ndef f(): return t()\nf()\n"
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, env=env)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["cnn"]:
        from pipelines.benchmark_cnn import main as cnn_main

        return cnn_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--batch", type=int, default=512, help="global batch size")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    spec = {"family": "fnn", "input_shape": [args.features], "out_features": 2, "hidden": args.hidden, "activation": "relu", "dropout": 0.0}
    data = make_data(args.rows, args.features, args.seed)
    print(f"workload: FNN {args.features}-{'-'.join(map(str, args.hidden))}-2 on {args.rows} rows, global batch {args.batch}, "
          f"{args.epochs} epochs, Adam, seed {args.seed}, {args.workers} CPU thread(s) for each side", flush=True)

    starts = hand_written_loop(data, spec, 1e-3, args.batch, args.epochs, args.seed, threads=args.workers)
    hand_sps = steady_samples_per_s(starts, args.rows)
    hand_total = starts[-1] - starts[0]
    print(f"hand-written loop : {hand_sps:10.0f} samples/s steady state ({hand_total:.1f} s total)", flush=True)

    ours = our_path(data, spec, 1e-3, args.batch, args.epochs, args.seed, args.workers)
    fit_fixed = ours["fit_wall_s"] - args.epochs * args.rows / ours["samples_per_s"]
    print(f"our train path    : {ours['samples_per_s']:10.0f} samples/s steady state "
          f"(Ray Train, {args.workers} workers, Lightning + RayDDPStrategy)")
    print(f"throughput ratio  : {ours['samples_per_s'] / hand_sps:.3f}  (target >= 0.90)")
    prefect_s = prefect_start_seconds()
    total_fixed = ours["ray_start_s"] + fit_fixed + ours["shutdown_s"] + prefect_s
    print("fixed cost per training:")
    print(f"  Ray start (local instance)               {ours['ray_start_s']:6.1f} s")
    print(f"  worker group start + teardown (per fit)  {fit_fixed:6.1f} s")
    print(f"  Ray shutdown                             {ours['shutdown_s']:6.1f} s")
    print(f"  Prefect start (embedded API, one task)   {prefect_s:6.1f} s")
    print(f"  total                                    {total_fixed:6.1f} s  (aim < 8 s)")


if __name__ == "__main__":
    main()
