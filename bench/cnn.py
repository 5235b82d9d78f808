"""The CNN benchmark: Fashion-MNIST, hand-written loop vs our Ray Train + Lightning path.

Same CNN, data, seed, global batch, optimizer and epochs on both sides; each
epoch ends with a pass over the 10k test images, so both report test accuracy
per epoch and the time to reach 90 % (training time from the first epoch's
start; the fixed start-up cost is reported separately).

    python -m bench.fnn cnn [--source /usr/share/datasets/fashion-mnist] [--epochs 8] [--workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.fnn import hand_written_epoch, hand_written_setup, steady_samples_per_s

TARGET = 0.90
DEFAULT_SOURCE = "/usr/share/datasets/fashion-mnist"


def load_fashion_mnist(source: str) -> dict[str, np.ndarray]:
    from pipelines.modalities.image import read_idx_folder

    x, y, split = read_idx_folder(Path(source))
    x = x.astype(np.float32)[:, None] / 255.0
    train = split == "train"
    mean, std = float(x[train].mean()), float(x[train].std())
    x = (x - mean) / std
    return {
        "train_x": x[train],
        "train_y": y[train].astype(np.int64),
        "test_x": x[~train],
        "test_y": y[~train].astype(np.int64),
    }


def hand_written_loop(data, spec, lr, batch, epochs, seed, threads) -> list[dict]:
    """Minimal PyTorch: tensors in memory, index slices, Adam, a test pass per epoch."""
    import torch

    net, opt, loss_fn = hand_written_setup(spec, lr, seed, threads)
    x, y = torch.from_numpy(data["train_x"]), torch.from_numpy(data["train_y"])
    tx, ty = torch.from_numpy(data["test_x"]), torch.from_numpy(data["test_y"])
    rows = []
    for epoch in range(epochs):
        started = time.time()
        hand_written_epoch(net, opt, loss_fn, x, y, batch, seed, epoch)
        net.eval()
        with torch.no_grad():
            correct = sum(
                int((net(tx[i : i + 2048]).argmax(-1) == ty[i : i + 2048]).sum()) for i in range(0, len(tx), 2048)
            )
        rows.append(
            {
                "epoch": epoch,
                "epoch_start_time": started,
                "epoch_end_time": time.time(),
                "test_accuracy": correct / len(tx),
            }
        )
        print(
            f"  hand-written epoch {epoch + 1}/{epochs}: test accuracy {rows[-1]['test_accuracy']:.4f} "
            f"({rows[-1]['epoch_end_time'] - started:.1f} s)",
            flush=True,
        )
    return rows


def our_path(data, spec, lr, batch, epochs, seed, workers) -> tuple[list[dict], dict]:
    from pipelines.handoffs.splits import write_split
    from pipelines.training import cluster, fit
    from pipelines.training.job import Scaling, TrainJob

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_split(tmp / "train", data["train_x"], data["train_y"])
        write_split(tmp / "val", data["test_x"], data["test_y"])  # val pass = test accuracy per epoch
        job = TrainJob(
            candidate="bench-cnn",
            model_spec=spec,
            optim={"optimizer": "adam", "lr": lr},
            task="multiclass",
            loss="cce",
            n_classes=10,
            data_dir=str(tmp),
            seed=seed,
            epochs=epochs,
            batch_size=batch,
            monitor="val/accuracy",
            mode="max",
            patience=epochs + 1,
        )
        ray_start = cluster.ensure_ray()
        started = time.time()
        outcome = fit.fit(job, Scaling(num_workers=workers), str(tmp / "ray"), "bench-cnn", keep=1)
        fit_wall = time.time() - started
        cluster.shutdown_ray()
    rows = [
        {
            "epoch": r["epoch"],
            "epoch_start_time": r["epoch_start_time"],
            "epoch_end_time": r["epoch_start_time"] + r["epoch_seconds"],
            "test_accuracy": r["val/accuracy"],
        }
        for r in outcome.history
    ]
    return rows, {"ray_start_s": ray_start, "fit_wall_s": fit_wall}


def time_to(rows: list[dict], target: float) -> float | None:
    """Seconds from the first epoch's start to the end of the first epoch at or above target."""
    for row in rows:
        if row["test_accuracy"] >= target:
            return row["epoch_end_time"] - rows[0]["epoch_start_time"]
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fnn cnn", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--source", default=DEFAULT_SOURCE, help="MNIST-style IDX folder (Debian: dataset-fashion-mnist)"
    )
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch", type=int, default=128, help="global batch size")
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--limit", type=int, default=None, help="use only the first N training images (a quick smoke run)"
    )
    args = parser.parse_args(argv)
    if not Path(args.source).is_dir():
        print(
            f"Fashion-MNIST not found at {args.source}: install Debian's dataset-fashion-mnist or pass --source. "
            "Skipping the CNN benchmark."
        )
        return

    data = load_fashion_mnist(args.source)
    if args.limit:
        data["train_x"], data["train_y"] = data["train_x"][: args.limit], data["train_y"][: args.limit]
    spec = {
        "family": "cnn",
        "input_shape": [1, 28, 28],
        "out_features": 10,
        "filters": [32, 64],
        "kernel_size": 3,
        "pool": 2,
        "dense": [128],
        "activation": "relu",
        "dropout": 0.25,
    }
    n = len(data["train_x"])
    print(
        f"workload: CNN conv32-conv64-dense128 on Fashion-MNIST ({n} train / {len(data['test_x'])} test), "
        f"global batch {args.batch}, "
        f"{args.epochs} epochs, Adam lr {args.lr}, seed {args.seed}, {args.workers} CPU thread(s) for each side",
        flush=True,
    )

    hand = hand_written_loop(data, spec, args.lr, args.batch, args.epochs, args.seed, threads=args.workers)
    ours, fixed = our_path(data, spec, args.lr, args.batch, args.epochs, args.seed, args.workers)
    for name, rows in (("hand-written loop", hand), ("our train path", ours)):
        starts = [r["epoch_start_time"] for r in rows] + [rows[-1]["epoch_end_time"]]
        t90 = time_to(rows, TARGET)
        print(
            f"{name:<18}: test accuracy {rows[-1]['test_accuracy']:.4f} after {len(rows)} epochs "
            f"(best {max(r['test_accuracy'] for r in rows):.4f}); "
            f"time to {TARGET:.0%}: {f'{t90:.0f} s' if t90 else 'not reached'}; "
            f"{steady_samples_per_s(starts, n):.0f} samples/s steady state"
        )
    h, o = time_to(hand, TARGET), time_to(ours, TARGET)
    hand_sps = steady_samples_per_s([r["epoch_start_time"] for r in hand] + [hand[-1]["epoch_end_time"]], n)
    our_sps = steady_samples_per_s([r["epoch_start_time"] for r in ours] + [ours[-1]["epoch_end_time"]], n)
    print(f"throughput ratio  : {our_sps / hand_sps:.3f}  (ours / hand-written)")
    if h and o:
        print(f"time-to-{TARGET:.0%} ratio: {h / o:.3f}  (hand-written / ours; 1.0 = no overhead)")
    print(
        f"fixed cost of our path: Ray start {fixed['ray_start_s']:.1f} s, fit wall {fixed['fit_wall_s']:.1f} s "
        f"(of which training {ours[-1]['epoch_end_time'] - ours[0]['epoch_start_time']:.1f} s)"
    )


if __name__ == "__main__":
    main()
