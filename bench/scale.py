"""Per-step overhead at scale: a large table at the default batch size, the default FNN.

Issue 13 measured 0.09x of a hand-written loop for a 700k-row, 10-column table, batch 64,
the default FNN (64-32), with the then-default 2 workers x 1 CPU. This case trains the same
shape (fewer rows by default, so it runs in about a minute) both ways on the same CPUs:

- the hand-written loop: one process, all the CPUs as threads, batch 64, Adam;
- our train path with the default scaling (`num_workers: auto`: one worker holding all the CPUs, on
  this CPU-only machine in Ray Train's local mode, in this process), and as one Ray Train worker;
- with --workers N, also our path with N workers x (CPUs / N) each (the old default was 2 x 1).

--profile also runs Lightning's loop in-process (no Ray) for one epoch under cProfile and prints
where the time per step goes, with fused micro-steps as the worker runs them (--unfused: without).

    python -m bench.fnn scale [--rows 50000] [--epochs 3] [--cpus 2] [--workers 2] [--profile [--unfused]]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import os
import pstats
import time

from bench.fnn import hand_written_loop, make_data, our_path, steady_samples_per_s

DEFAULT_FNN = {"hidden": [64, 32], "activation": "relu", "dropout": 0.0}  # the tabular default candidate


def profile_lightning(data, spec: dict, batch: int, threads: int, fused: bool = True, top: int = 25) -> str:
    """One epoch of our TaskModule in Lightning's loop, in this process: cProfile's cumulative view.

    fused: K minibatch updates per Lightning step where the worker would fuse them (training/fused.py).
    """
    import lightning.pytorch as pl
    import torch

    from models.task_module import TaskModule
    from pipelines.training.batches import TensorBatches
    from pipelines.training.callbacks import EpochHistory, FiniteLoss
    from pipelines.training.fused import fuse, updates_per_step
    from pipelines.training.worker import SMALL_STEP_MACS

    x, y = torch.from_numpy(data["train_x"]), torch.from_numpy(data["train_y"])
    vx, vy = torch.from_numpy(data["val_x"]), torch.from_numpy(data["val_y"])
    module = TaskModule(spec, {"optimizer": "adam", "lr": 1e-3}, "multiclass", "cce", 2)
    macs = sum(p.numel() for p in module.parameters()) * batch
    torch.set_num_threads(1 if macs < SMALL_STEP_MACS else threads)  # as the worker does
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
        num_sanity_val_steps=0,
        callbacks=[EpochHistory(), FiniteLoss("bench/fnn", 1e-3)],
    )
    group = updates_per_step(trainer, macs) if fused else 1
    if group > 1:
        module = fuse(module)
    train = TensorBatches(x, y, batch, shuffle=True, group=group)
    module.train_batches = train
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    trainer.fit(module, train, TensorBatches(vx, vy, 1024, shuffle=False))
    profiler.disable()
    seconds = time.perf_counter() - started
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
    steps = math.ceil(len(x) / batch)
    return (
        f"Lightning in-process, 1 epoch, {group} minibatch(es) per Lightning step: {seconds:.2f} s, "
        f"{1000 * seconds / steps:.3f} ms per minibatch\n{out.getvalue()}"
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fnn scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000, help="training rows (issue 13: 700000)")
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64, help="global batch size (the pipeline's default)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="CPUs each side may use")
    parser.add_argument("--workers", type=int, default=0, help="also our path with this many workers (0: skip)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true", help="cProfile one epoch of Lightning's loop in-process")
    parser.add_argument("--unfused", action="store_true", help="profile one Lightning step per minibatch")
    args = parser.parse_args(argv)
    if args.workers and args.cpus % args.workers:
        parser.error(f"--cpus {args.cpus} does not split evenly over --workers {args.workers}")

    spec = {"family": "fnn", "input_shape": [args.features], "out_features": 2, **DEFAULT_FNN}
    data = make_data(args.rows, args.features, args.seed)
    steps = args.rows // args.batch
    print(
        f"workload: FNN {args.features}-64-32-2 on {args.rows} rows, batch {args.batch} ({steps} steps/epoch), "
        f"{args.epochs} epochs, Adam; every side uses {args.cpus} CPU(s)",
        flush=True,
    )
    hand = steady_samples_per_s(
        hand_written_loop(data, spec, 1e-3, args.batch, args.epochs, args.seed, threads=args.cpus), args.rows
    )
    print(
        f"hand-written loop, 1 process x {args.cpus} threads : {hand:9.0f} samples/s  "
        f"{1000 * args.batch / hand:6.3f} ms/step"
    )
    if args.cpus > 1:  # small steps: one thread may beat several (the worker picks one for such models)
        one = steady_samples_per_s(
            hand_written_loop(data, spec, 1e-3, args.batch, args.epochs, args.seed, threads=1), args.rows
        )
        print(
            f"hand-written loop, 1 process x 1 thread  : {one:9.0f} samples/s  {1000 * args.batch / one:6.3f} ms/step"
        )
        hand = max(hand, one)  # ratios against the faster hand-written loop
    sides = [
        (f"our path, auto (in process, {args.cpus} CPUs)", 1, args.cpus, True),
        (f"our path, 1 Ray worker x {args.cpus} CPUs", 1, args.cpus, False),
    ]
    if args.workers:
        sides.append(
            (
                f"our path, {args.workers} workers x {args.cpus // args.workers} CPU(s)",
                args.workers,
                args.cpus // args.workers,
                False,
            )
        )
    for label, workers, cpus, in_process in sides:
        ours = our_path(
            data, spec, 1e-3, args.batch, args.epochs, args.seed, workers, cpus_per_worker=cpus, in_process=in_process
        )
        sps = ours["samples_per_s"]
        print(
            f"{label:<44}: {sps:9.0f} samples/s  {1000 * args.batch / sps:6.3f} ms/step  "
            f"ratio {sps / hand:.3f}  (target >= 0.6)",
            flush=True,
        )
    if args.profile:
        print(profile_lightning(data, spec, args.batch, args.cpus, fused=not args.unfused))
