"""Stage 2, prepare: seeded split, train-only normalization, compact arrays + meta."""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipelines import paths
from pipelines.atomic import atomic_dir, read_json, write_json
from pipelines.config import IngestParams, PrepareParams, load_params
from pipelines.errors import PipelineInputError, cli_entry


def split_indices(n: int, params: PrepareParams) -> dict[str, np.ndarray]:
    """Deterministic shuffled split: same seed and row count give the same rows."""
    order = np.random.default_rng(params.seed).permutation(n)
    n_test = max(1, int(round(n * params.test_fraction)))
    n_val = max(1, int(round(n * params.val_fraction)))
    if n - n_test - n_val < 1:
        raise PipelineInputError(f"prepare: {n} rows are too few to split into train/val/test")
    return {
        "test": np.sort(order[:n_test]),
        "val": np.sort(order[n_test : n_test + n_val]),
        "train": np.sort(order[n_test + n_val :]),
    }


def encode_labels(label: pd.Series, task: str) -> tuple[np.ndarray, list[str] | None]:
    if task == "regression":
        return label.to_numpy(dtype=np.float32).reshape(-1, 1), None
    classes = sorted(label.unique().tolist(), key=lambda v: (str(type(v)), v))
    index = {c: i for i, c in enumerate(classes)}
    return label.map(index).to_numpy(dtype=np.int64), [str(c) for c in classes]


def prepare(ingest: IngestParams, params: PrepareParams) -> dict:
    table = pd.read_parquet(paths.RAW_TABLE)
    source = read_json(paths.RAW_SOURCE_INFO)
    task = source["task"]
    features = [c for c in table.columns if c != ingest.label]
    x = table[features].to_numpy(dtype=np.float32)
    y, classes = encode_labels(table[ingest.label], task)
    splits = split_indices(len(table), params)

    train_x = x[splits["train"]]
    mean = train_x.mean(axis=0) if params.normalize else np.zeros(x.shape[1], np.float32)
    std = train_x.std(axis=0) if params.normalize else np.ones(x.shape[1], np.float32)
    std = np.where(std < 1e-8, 1.0, std).astype(np.float32)  # constant columns stay finite

    meta = {
        "modality": "table",
        "task": task,
        "features": features,
        "in_features": len(features),
        "label": ingest.label,
        "classes": classes,
        "out_features": 1 if task in ("regression", "binary") else len(classes),
        "normalization": {"mean": mean.tolist(), "std": std.tolist()},
        "sizes": {name: int(len(idx)) for name, idx in splits.items()},
        "seed": params.seed,
    }
    if classes:
        meta["class_counts_train"] = np.bincount(y[splits["train"]], minlength=len(classes)).tolist()
    with atomic_dir(paths.PREPARED_DIR) as tmp:
        for name, idx in splits.items():
            np.savez(tmp / paths.split_file(name).name, x=((x[idx] - mean) / std).astype(np.float32), y=y[idx])
        write_json(tmp / paths.PREPARED_META.name, meta)
    return meta


def load_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(paths.split_file(split)) as arrays:
        return arrays["x"], arrays["y"]


@cli_entry
def main() -> None:
    params = load_params()
    meta = prepare(params.ingest, params.prepare)
    print(f"prepare: {meta['task']}, {meta['in_features']} features, split sizes {meta['sizes']}")


if __name__ == "__main__":
    main()
