"""Framework overhead, measured: hand-written PyTorch loops vs our train path.

Every side trains the same FNN on the same data with the same seed, global batch
size and epochs, on the same number of CPUs:

- a hand-written loop, one process using all the CPUs as threads;
- the same loop as N DDP processes over gloo (no Ray, no Lightning);
- our train path (Ray Train TorchTrainer + Lightning, as the train stage runs it)
  with one worker holding all the CPUs, and with N workers.

Our 1-worker path against the hand-written loop is the framework's overhead; our
N-worker path against hand-written DDP is the same at N workers; hand-written DDP
against the loop is what data parallelism itself costs on this machine. A small CNN
(8x8 images) also trains with 1 and N workers, for DDP's per-step cost on a convolutional step.
Steady-state throughput is samples per second over epochs after the first,
between consecutive epoch starts (so it includes validation and, on our path,
Ray's per-epoch report + checkpoint). Fixed cost is everything else: Ray start,
worker group start (processes, imports, process group), teardown, Prefect's start.

    python -m bench.fnn [--rows 100000] [--epochs 6] [--cpus 2] [--workers 2] [--repeats 3] [--cnn-rows 20000]
    python -m bench.fnn cnn [--source /usr/share/datasets/fashion-mnist] [--epochs 8]
    python -m bench.fnn scale [--rows 50000] [--workers 2] [--profile]   (per-step overhead, batch 64)

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

    x, y = make_classification(
        n_samples=rows + 2048, n_features=features, n_informative=features // 2, random_state=seed
    )
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    return {
        "train_x": x[:rows],
        "train_y": y[:rows].astype(np.int64),
        "val_x": x[rows:],
        "val_y": y[rows:].astype(np.int64),
    }


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


def _ddp_rank(rank: int, world: int, port: int, data, spec, lr, batch, epochs, seed, threads, starts_out) -> None:
    """One rank of the hand-written DDP loop: the same shards and shuffles as our workers (TensorBatches)."""
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    net, opt, loss_fn = hand_written_setup(spec, lr, seed, threads)
    net = torch.nn.parallel.DistributedDataParallel(net)
    x, y = torch.from_numpy(data["train_x"]), torch.from_numpy(data["train_y"])
    vx, vy = torch.from_numpy(data["val_x"][rank::world]), torch.from_numpy(data["val_y"][rank::world])
    per_rank, starts = len(x) // world, []
    for epoch in range(epochs):
        starts.append(time.perf_counter())
        net.train()
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        shard = order[rank * per_rank : (rank + 1) * per_rank]
        for i in range(0, per_rank, batch // world):
            idx = shard[i : i + batch // world]
            opt.zero_grad(set_to_none=True)
            loss_fn(net(x[idx]), y[idx]).backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            correct = (net(vx).argmax(-1) == vy).sum()
        dist.all_reduce(correct)
    starts.append(time.perf_counter())
    if rank == 0:
        starts_out.put(starts)
    dist.destroy_process_group()


def hand_written_ddp(data, spec, lr, batch, epochs, seed, workers, threads) -> list[float]:
    """The minimal loop as `workers` DDP processes over gloo (no Ray, no Lightning): what data
    parallelism itself costs on this machine, the fair reference for our multi-worker path."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    starts_out = ctx.Queue()
    procs = [
        ctx.Process(target=_ddp_rank, args=(r, workers, port, data, spec, lr, batch, epochs, seed, threads, starts_out))
        for r in range(workers)
    ]
    for p in procs:
        p.start()
    try:
        starts = starts_out.get(timeout=600)
    finally:
        for p in procs:
            p.join(timeout=60)
    if any(p.exitcode != 0 for p in procs):
        raise RuntimeError(f"hand-written DDP: a rank failed (exit codes {[p.exitcode for p in procs]})")
    return starts


def our_path(
    data,
    spec,
    lr,
    batch,
    epochs,
    seed,
    workers,
    cpus_per_worker,
    loop_beside_ray: bool = False,
    in_process=False,
    keep_ray: bool = False,
) -> dict:
    """Our train path (training.fit.fit, as the train stage runs it): in this process, or on a fresh local Ray instance.

    loop_beside_ray: also time the hand-written loop in this process, after the fit, while the
    Ray instance idles beside it (its daemons and idle workers wake up many times a second), which is
    what Ray's mere presence costs a compute-bound loop on this machine.
    in_process: `num_workers: auto` on this CPU-only machine: Ray Train's local mode, the worker in this
    process, no Ray instance (`training.cluster.trains_in_process`).
    keep_ray: leave the Ray instance running for the next side (whose Ray start then reads ~0 s): for sides whose
    per-step time alone is reported.
    """
    from pipelines.handoffs.splits import write_split
    from pipelines.training import cluster, fit
    from pipelines.training.job import Scaling, TrainJob

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_split(tmp / "train", data["train_x"], data["train_y"])
        write_split(tmp / "val", data["val_x"], data["val_y"])
        job = TrainJob(
            candidate=f"bench-{workers}w",
            model_spec=spec,
            optim={"optimizer": "adam", "lr": lr},
            task="multiclass",
            loss="cce",
            n_classes=2,
            data_dir=str(tmp),
            seed=seed,
            epochs=epochs,
            batch_size=batch,
            monitor="val/loss",
            mode="min",
            patience=epochs + 1,
        )
        ray_start = 0.0 if in_process else cluster.ensure_ray()
        started = time.time()
        scaling = Scaling(num_workers=workers, cpus_per_worker=cpus_per_worker, in_process=in_process)
        outcome = fit.fit(job, scaling, str(tmp / "ray"), "bench", keep=1)
        ended = time.time()
        beside = None
        if loop_beside_ray:  # after the fit: its own process must not share the CPUs with it
            time.sleep(2)  # the fit's actors exit; Ray is back to idle
            beside = steady_samples_per_s(
                hand_written_loop(data, spec, lr, batch, 4, seed, threads=workers * cpus_per_worker),
                len(data["train_x"]),
            )
        t = time.perf_counter()
        if not keep_ray:
            cluster.shutdown_ray()
        shutdown = time.perf_counter() - t
    rows = outcome.history
    starts = [row["epoch_start_time"] for row in rows]
    period = statistics.median(np.diff(starts[1:]))
    sps = steady_samples_per_s(starts + [starts[-1] + period], len(data["train_x"]))
    # Between EpochHistory's epoch end and the next epoch's start: Ray's report + checkpoint.
    report = statistics.median(
        b["epoch_start_time"] - a["epoch_start_time"] - a["epoch_seconds"] for a, b in zip(rows[1:], rows[2:])
    )
    return {
        "samples_per_s": sps,
        "ray_start_s": ray_start,
        "shutdown_s": shutdown,
        "epoch_s": period,
        "report_s": report,
        "hand_beside_ray_samples_per_s": beside,
        # fit() call to the first epoch's start: controller, worker processes, imports, process group, Lightning set-up
        "group_start_s": starts[0] - started,
        # the last epoch's end (at the steady pace) to fit() returning: workers and controller shut down,
        # result read back
        "teardown_s": max(0.0, ended - (starts[-1] + period)),  # tiny epochs: their pace can overshoot it
        # what the first epoch took beyond a steady one (first-touch allocations, lazy inits)
        "warmup_s": max(0.0, (starts[1] - starts[0]) - period) if len(starts) > 1 else 0.0,
    }


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
        from bench.cnn import main as cnn_main

        return cnn_main(argv[1:])
    if argv[:1] == ["scale"]:
        from bench.scale import main as scale_main

        return scale_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--batch", type=int, default=512, help="global batch size")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs each side may use (threads, or workers x threads)")
    parser.add_argument("--workers", type=int, default=2, help="data-parallel workers of the multi-worker comparison")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds of every side (medians reported)")
    parser.add_argument(
        "--cnn-rows", type=int, default=20_000, help="8x8 images of the CNN's per-step line (2 workers vs 1)"
    )
    parser.add_argument("--cnn-epochs", type=int, default=3)
    args = parser.parse_args(argv)
    if args.cpus % args.workers:
        parser.error(f"--cpus {args.cpus} does not split evenly over --workers {args.workers}")

    spec = {
        "family": "fnn",
        "input_shape": [args.features],
        "out_features": 2,
        "hidden": args.hidden,
        "activation": "relu",
        "dropout": 0.0,
    }
    data = make_data(args.rows, args.features, args.seed)
    images = make_images(args.cnn_rows, args.seed)
    n, per = args.workers, args.cpus // args.workers
    print(
        f"workload: FNN {args.features}-{'-'.join(map(str, args.hidden))}-2 on {args.rows} rows, "
        f"global batch {args.batch}, "
        f"{args.epochs} epochs, Adam, seed {args.seed}; every side uses {args.cpus} CPU(s)",
        flush=True,
    )

    runs = [
        one_round(data, spec, images, args, n, per) for _ in range(args.repeats)
    ]  # interleaved: every side per round
    last = runs[-1]
    for label, key in (
        (f"hand-written loop, 1 process x {args.cpus} threads    ", "hand"),
        (f"hand-written DDP, {n} processes x {per} thread(s)  ", "ddp"),
        (f"our train path, auto (in process, {args.cpus} CPUs)  ", "auto"),
        ("hand-written loop, with Ray idling beside it", "beside"),
        (f"our train path, 1 Ray worker x {args.cpus} CPUs       ", "one"),
        (f"our train path, {n} workers x {per} CPU(s)          ", "many"),
    ):
        values = [run["sps"][key] for run in runs]
        print(f"{label}: {statistics.median(values):9.0f} samples/s{spread(values, '.0f')}", flush=True)

    print(f"throughput ratios (steady state; median of {args.repeats} interleaved rounds [min-max]):")
    for label, top, bottom, note in (
        ("ours auto (in process) / hand loop  ", "auto", "hand", "target >= 0.90: the default path on this machine"),
        ("ours 1 Ray worker / hand loop       ", "one", "hand", "target >= 0.90: num_workers: 1"),
        (f"ours {n} workers / hand-written DDP  ", "many", "ddp", f"target >= 0.85: framework overhead at {n} workers"),
        ("hand-written DDP / hand-written loop", "ddp", "hand", f"what {n}-process data parallelism costs here"),
        ("loop beside idle Ray / loop         ", "beside", "hand", "what a running Ray instance costs a loop here"),
        ("ours 1 Ray worker / loop beside Ray ", "one", "beside", "Lightning + Ray Train in the worker"),
    ):
        ratios = [run["sps"][top] / run["sps"][bottom] for run in runs]
        print(f"  {label} {statistics.median(ratios):6.3f}{spread(ratios, '.3f')}  ({note})")
    # Per optimizer step at the same global batch (so the same number of steps per epoch): what DDP's
    # all-reduce and the smaller per-worker batch cost or save per step.
    for family, rows, prefix in (("FNN", args.rows, ""), ("CNN (8x8 images)", args.cnn_rows, "cnn_")):
        steps = -(-rows // args.batch)
        per_step = [1000 * run["sides"][prefix + "many"]["epoch_s"] / steps for run in runs]
        per_step_one = [1000 * run["sides"][prefix + "one"]["epoch_s"] / steps for run in runs]
        step_ratio = [a / b for a, b in zip(per_step, per_step_one)]
        print(
            f"  per step, {family}, global batch {args.batch}: {n} workers {statistics.median(per_step):.2f} ms, "
            f"1 worker {statistics.median(per_step_one):.2f} ms; "
            f"{n} / 1 = {statistics.median(step_ratio):.3f}{spread(step_ratio, '.3f')}"
        )
    for label, key in (("auto (in process)", "auto"), ("1 Ray worker", "one"), (f"{n} workers", "many")):
        side = last["sides"][key]
        print(
            f"  per epoch, ours {label}: {side['epoch_s']:.2f} s, of which report + checkpoint {side['report_s']:.3f} s"
        )

    print(f"fixed cost per training (auto in process / 1 Ray worker / {n} workers; medians of {args.repeats} rounds):")
    parts = (
        ("Ray start (local instance)", "ray_start_s"),
        ("worker group start (to first epoch)", "group_start_s"),
        ("first-epoch warm-up", "warmup_s"),
        ("worker group teardown", "teardown_s"),
        ("Ray shutdown", "shutdown_s"),
    )
    sides = ("auto", "one", "many")

    def median_of(key: str, part: str) -> float:
        return statistics.median(run["sides"][key][part] for run in runs)

    for label, part in parts:
        print(f"  {label:<38} " + " / ".join(f"{median_of(key, part):6.1f} s" for key in sides))
    for label, key in (("auto (in process)", "auto"), ("1 Ray worker", "one"), (f"{n} workers", "many")):
        total = sum(median_of(key, part) for _, part in parts)
        print(f"  total, {label:<31} {total:6.1f} s  (target <= 8 s)")
    # What a user pays beside a fit and the fixed cost above leaves out: once per run (Prefect) and once per
    # train stage (its own process: Python, the stage's imports of torch, Lightning and Ray Train).
    prefect_s = prefect_start_seconds()
    print("not in the fixed cost above, paid by a user too:")
    print(f"  Prefect start (embedded API, one-task flow; once per run)  {prefect_s:6.1f} s")
    print(f"  train stage process start and imports (once per stage)     {stage_process_seconds():6.1f} s")


def spread(values: list[float], fmt: str) -> str:
    """' [min-max]' of several rounds (nothing for one)."""
    return f" [{min(values):{fmt}}-{max(values):{fmt}}]" if len(values) > 1 else ""


def make_images(rows: int, seed: int) -> dict[str, np.ndarray]:
    """The synthetic table's 64 features as 1x8x8 images (digits' size): the CNN's per-step line."""
    return {
        key: value.reshape(len(value), 1, 8, 8) if key.endswith("_x") else value
        for key, value in make_data(rows, 64, seed).items()
    }


CNN_SPEC = {  # digits' cnn-wide shape
    "family": "cnn",
    "input_shape": [1, 8, 8],
    "out_features": 2,
    "filters": [16, 32],
    "kernel_size": 3,
    "pool": 2,
    "dense": [64],
    "activation": "relu",
    "dropout": 0.0,
}


def one_round(data, spec, images, args, n: int, per: int) -> dict:
    """Every side once, in a fixed order: rounds interleave the sides, so a slow spell of the machine hits all."""
    rows, lr, batch, epochs, seed = args.rows, 1e-3, args.batch, args.epochs, args.seed
    sps = {
        "hand": steady_samples_per_s(hand_written_loop(data, spec, lr, batch, epochs, seed, threads=args.cpus), rows)
    }
    sps["ddp"] = steady_samples_per_s(hand_written_ddp(data, spec, lr, batch, epochs, seed, n, per), rows)
    sides = {
        "auto": our_path(data, spec, lr, batch, epochs, seed, workers=1, cpus_per_worker=args.cpus, in_process=True),
        "one": our_path(
            data, spec, lr, batch, epochs, seed, workers=1, cpus_per_worker=args.cpus, loop_beside_ray=True
        ),
        "many": our_path(data, spec, lr, batch, epochs, seed, workers=n, cpus_per_worker=per),
        # per-step time only: 2 workers vs 1 at the same global batch, for a convolutional step (one Ray instance)
        "cnn_one": our_path(
            images, CNN_SPEC, lr, batch, args.cnn_epochs, seed, workers=1, cpus_per_worker=args.cpus, keep_ray=True
        ),
        "cnn_many": our_path(images, CNN_SPEC, lr, batch, args.cnn_epochs, seed, workers=n, cpus_per_worker=per),
    }
    sps.update({key: side["samples_per_s"] for key, side in sides.items()})
    sps["beside"] = sides["one"]["hand_beside_ray_samples_per_s"]
    return {"sps": sps, "sides": sides}


def stage_process_seconds() -> float:
    """Wall time of a fresh Python process importing what a train stage imports before it trains."""
    code = "import models, pipelines.stages.train, pipelines.training.worker, torch, lightning.pytorch, ray.train.torch"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
