"""Data bigger than memory: prepare in chunks and training streamed through Ray Data, at growing sizes.

    make bench ARGS="stream [--rows 100000] [--scales 1 4 16] [--epochs 3] [--repeats 3] [--chunk-rows 65536]"
    make bench ARGS="stream --only images [--images 12500 50000] [--chunk-images N]"

For a generated table (20 numeric and 5 categorical columns, a binary label) at each scale:

- ingest and prepare: rows/s and the peak resident memory (VmHWM) of each stage's process;
- train with `data_loading: stream` (Ray Train's local mode, one worker in the stage's process, batch 256):
  rows/s of the steady epochs (all but the first) and the peak resident memory of the training process
  (Ray Data's read tasks run in Ray's worker processes and are not counted);

and, on the 1x table, `--repeats` interleaved pairs of trainings with `data_loading: memory` and `stream`: the
streamed/in-memory throughput ratio of each pair, reported as the median with min and max: per epoch (train
and validation, as before), and per wall-clock cycle (also counting the time between epochs).

For a folder of generated 28x28 grayscale PNGs (scikit-learn's digits, enlarged, each under its own noise, in
ten class subfolders) at each count in `--images`: prepare's images/s and peak resident memory (photos are
decoded and resized in chunks of `prepare.chunk_images`).

Each measurement runs in a fresh child process so its peak memory is its own. Ingest and prepare read the
table `--chunk-rows` rows at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import csv, json, sys, time
from pathlib import Path
from pipelines.config import ComputeParams, DatasetParams
step, params = sys.argv[1], DatasetParams.model_validate_json(sys.argv[2])
started = time.perf_counter()
if step == "ingest":
    from pipelines.stages.ingest import ingest
    out = {"rows": ingest(sys.argv[3] if len(sys.argv) > 3 else "b", params)["rows"]}
elif step == "prepare":
    from pipelines.stages.prepare import prepare
    out = {"sizes": prepare(sys.argv[3] if len(sys.argv) > 3 else "b", params)["sizes"]}
else:
    from pipelines.stages.train import train
    summary = train("b", params, ComputeParams(storage_path=str(Path("ray").resolve())))
    fnn = summary["candidates"]["fnn"]
    assert fnn["status"] == "finished", fnn
    history = csv.DictReader(open("data/train/b/fnn/history.csv"))
    history = list(history)
    out = {
        "data_loading": summary["data_loading"],
        "epoch_seconds": [r["epoch_seconds"] for r in history],
        "epoch_start_time": [r["epoch_start_time"] for r in history],
    }
out["seconds"] = time.perf_counter() - started
status = Path("/proc/self/status").read_text().splitlines()
out["peak_mib"] = int(next(l.split()[1] for l in status if l.startswith("VmHWM:"))) / 1024
print("RESULT " + json.dumps(out))
"""


def table(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 20)).astype(np.float32)
    frame = pd.DataFrame(x, columns=[f"n{i}" for i in range(20)])
    for i in range(5):
        frame[f"c{i}"] = rng.choice([f"v{j}" for j in range(8 + 4 * i)], rows)
    score = x[:, :5].sum(axis=1) + (frame["c0"] == "v0").to_numpy() * 2
    frame["label"] = (score + rng.normal(size=rows) > 0).astype(np.int64)
    return frame


def params(source: Path, loading: str, epochs: int, chunk_rows: int = 65536) -> str:
    from pipelines.config import DatasetParams

    return DatasetParams(
        modality="table",
        ingest={"source": str(source), "label": "label", "chunk_rows": chunk_rows},
        prepare={"chunk_rows": chunk_rows},
        train={
            "epochs": epochs,
            "batch_size": 256,
            "data_loading": loading,
            "early_stopping": {"patience": epochs},
            "candidates": {"fnn": {"family": "fnn", "hidden": [64, 32]}},
        },
        register={"model_name": "bench-stream"},
    ).model_dump_json()


def child(step: str, dataset_json: str, cwd: Path, dataset: str = "b") -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, step, dataset_json, dataset], cwd=cwd, env=env, capture_output=True, text=True
    )
    if proc.returncode:
        raise SystemExit(f"{step} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])


def steady_rows_per_s(result: dict, train_rows: int) -> float:
    """Training rows over the mean seconds of the epochs after the first (each from its train start to its
    validation's end)."""
    steady = [float(s) for s in result["epoch_seconds"][1:]] or [float(s) for s in result["epoch_seconds"]]
    return train_rows / (sum(steady) / len(steady))


def cycle_rows_per_s(result: dict, train_rows: int) -> float:
    """Training rows over the wall time from the second epoch's start to the last epoch's end, per epoch: also
    counts what runs between epochs (checkpoints, reports), where work started ahead could hide from
    `steady_rows_per_s`."""
    starts, seconds = [float(t) for t in result["epoch_start_time"]], [float(s) for s in result["epoch_seconds"]]
    if len(starts) < 2:
        return steady_rows_per_s(result, train_rows)
    return train_rows / ((starts[-1] + seconds[-1] - starts[1]) / (len(starts) - 1))


def write_pngs(root: Path, count: int, seed: int = 0) -> None:
    """`count` 28x28 grayscale PNGs under root/<digit>/: the digits enlarged, each with its own noise."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    big = np.stack([np.asarray(Image.fromarray(im).resize((28, 28))) for im in (digits.images * 15).astype(np.uint8)])
    rng = np.random.default_rng(seed)
    for label in range(10):
        (root / str(label)).mkdir(parents=True)
    for i in range(count):
        k = i % len(big)
        noisy = np.clip(big[k] + rng.normal(0, 12, (28, 28)), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(root / str(digits.target[k]) / f"{i:06d}.png")


def image_params(source: Path, chunk_images: int | None) -> str:
    from pipelines.config import DatasetParams

    return DatasetParams(
        modality="image",
        ingest={"source": str(source)},
        prepare={"chunk_images": chunk_images},
        train={"candidates": {"cnn": {"family": "cnn"}}},
        register={"model_name": "bench-stream-images"},
    ).model_dump_json()


def bench_images(counts: list[int], chunk_images: int | None, work: Path) -> None:
    """Prepare of a folder of PNGs at each count: images/s and peak memory (ingest is not measured)."""
    from pipelines.config import DatasetParams
    from pipelines.stages.ingest import ingest

    rows_out = []
    for count in counts:
        folder = work / f"pngs{count}"
        write_pngs(folder, count)
        name = f"img{count}"
        ingest(name, DatasetParams.model_validate_json(image_params(folder, chunk_images)))
        prepared = child("prepare", image_params(folder, chunk_images), work, name)
        on_disk = sum(p.stat().st_size for p in (work / "data/prepared" / name).rglob("*") if p.is_file())
        row = {
            "images": count,
            "prepared_mib_on_disk": round(on_disk / 2**20, 1),
            "prepare_images_per_s": round(count / prepared["seconds"]),
            "prepare_peak_mib": round(prepared["peak_mib"]),
        }
        print(json.dumps(row), flush=True)
        rows_out.append(row)
    first, last = rows_out[0], rows_out[-1]
    ratio = last["prepare_peak_mib"] / first["prepare_peak_mib"]
    print(f"image prepare peak {last['images']} / {first['images']} images: {ratio:.2f}")


def spread(values: list[float], digits: int = 2) -> str:
    """median [min-max]"""
    return f"{np.median(values):.{digits}f} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def compare_loading(source: Path, train_rows: int, args: argparse.Namespace, work: Path) -> None:
    """`memory` and `stream` trainings of one table, interleaved in pairs (so a busy spell of a shared machine
    hits both sides alike): steady rows/s of each side and the stream/memory ratio of each pair."""
    rates: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        pair = {}
        for loading in ("memory", "stream"):
            result = child("train", params(source, loading, args.epochs), work)
            pair[loading] = steady_rows_per_s(result, train_rows)
            pair[f"{loading}_cycle"] = cycle_rows_per_s(result, train_rows)
        pair["stream_over_memory"] = pair["stream"] / pair["memory"]
        pair["stream_over_memory_cycle"] = pair["stream_cycle"] / pair["memory_cycle"]
        for key, value in pair.items():
            rates.setdefault(key, []).append(value)
        print(json.dumps({k: round(v, 2 if "over" in k else 0) for k, v in pair.items()}))
    print(
        f"{train_rows} training rows, batch 256, {args.repeats} interleaved pairs, median [min-max]: "
        f"memory {spread(rates['memory'], 0)} rows/s, stream {spread(rates['stream'], 0)} rows/s, "
        f"stream/memory {spread(rates['stream_over_memory'])}; counting the time between epochs too: "
        f"stream/memory {spread(rates['stream_over_memory_cycle'])}",
        flush=True,
    )


def bench_tables(args: argparse.Namespace, work: Path) -> None:
    rows_out = []
    for scale in args.scales:
        n = args.rows * scale
        source = work / f"table{scale}.parquet"
        table(n).to_parquet(source, index=False)
        ingested = child("ingest", params(source, "stream", args.epochs, args.chunk_rows), work)
        prepared = child("prepare", params(source, "stream", args.epochs, args.chunk_rows), work)
        trained = child("train", params(source, "stream", args.epochs), work)
        on_disk = sum(p.stat().st_size for p in (work / "data/prepared/b").rglob("*") if p.is_file())
        row = {
            "scale": scale,
            "rows": n,
            "prepared_mib_on_disk": round(on_disk / 2**20, 1),
            "ingest_rows_per_s": round(n / ingested["seconds"]),
            "ingest_peak_mib": round(ingested["peak_mib"]),
            "prepare_rows_per_s": round(n / prepared["seconds"]),
            "prepare_peak_mib": round(prepared["peak_mib"]),
            "train_stream_rows_per_s": round(steady_rows_per_s(trained, prepared["sizes"]["train"])),
            "train_stream_peak_mib": round(trained["peak_mib"]),
        }
        print(json.dumps(row), flush=True)
        rows_out.append(row)
        if scale == args.scales[0]:
            compare_loading(source, prepared["sizes"]["train"], args, work)
    first, last = rows_out[0], rows_out[-1]
    ratio = f"{last['scale']}x / {first['scale']}x"
    print(f"ingest peak {ratio}: {last['ingest_peak_mib'] / first['ingest_peak_mib']:.2f}")
    print(f"prepare peak {ratio}: {last['prepare_peak_mib'] / first['prepare_peak_mib']:.2f}")
    print(f"training peak {ratio}: {last['train_stream_peak_mib'] / first['train_stream_peak_mib']:.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["tables", "images"], help="one of the two benchmarks (default: both)")
    parser.add_argument("--rows", type=int, default=100_000, help="rows of the 1x table")
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved memory/stream pairs on the 1x table")
    parser.add_argument("--chunk-rows", type=int, default=65536, help="ingest and prepare.chunk_rows")
    parser.add_argument("--images", type=int, nargs="+", default=[12_500, 50_000], help="PNGs in each folder")
    parser.add_argument("--chunk-images", type=int, default=None, help="prepare.chunk_images (default: 16 MiB)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        work = Path(tmp)
        os.chdir(work)
        if args.only != "images":
            bench_tables(args, work)
        if args.only != "tables":
            bench_images(args.images, args.chunk_images, work)
        os.chdir(ROOT)


if __name__ == "__main__":
    main()
