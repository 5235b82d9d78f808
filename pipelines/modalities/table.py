"""Tables (CSV, Parquet, scikit-learn's bundled tables) for the FNN: regression, binary, multi-class."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.config import IngestParams, PrepareParams
from pipelines.errors import PipelineInputError
from pipelines.modalities.common import encode_classes, shuffled_split
from pipelines.modalities.sources import fetched, load_sklearn_table, read_table

RAW_TABLE = "table.parquet"

MAX_CLASSES_FOR_AUTO = 20


def load_source(params: IngestParams) -> tuple[pd.DataFrame, dict]:
    """Return the raw table and a description of where it came from."""
    source = params.source
    if source.startswith("sklearn:"):
        name = source.split(":", 1)[1]
        return load_sklearn_table(name), {"source": source, "kind": "sklearn"}
    with fetched(source) as local:
        digest = hashlib.sha256(local.read_bytes()).hexdigest()
        return read_table(local, source), {"source": source, "kind": "file", "sha256": digest}


def infer_task(label: pd.Series) -> str:
    values = label.dropna()
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return "binary" if values.nunique() == 2 else "multiclass"
    integral = bool((values == values.round()).all())
    n = values.nunique()
    if integral and n == 2:
        return "binary"
    if integral and n <= MAX_CLASSES_FOR_AUTO and n < len(values) / 2:
        return "multiclass"
    return "regression"


def validate_table(df: pd.DataFrame, params: IngestParams) -> tuple[pd.DataFrame, str]:
    """Check columns, types, label and missing values; return the clean table and task.

    Row numbers in messages are 1-based data rows (the header is not counted).
    """
    src = params.source
    if df.shape[1] == 0 or len(df) == 0:
        raise PipelineInputError(f"{src}: no data rows (expected a header row and at least one data row)")
    df = df.rename(columns=lambda c: str(c).strip())
    if params.label not in df.columns:
        raise PipelineInputError(
            f"{src}: label column '{params.label}' (ingest.label) not found; columns are: {', '.join(df.columns)}"
        )
    features = [c for c in df.columns if c != params.label]
    if not features:
        raise PipelineInputError(f"{src}: no feature columns besides the label '{params.label}'")

    for col in features:
        if pd.api.types.is_numeric_dtype(df[col]) and not pd.api.types.is_bool_dtype(df[col]):
            continue
        converted = pd.to_numeric(df[col], errors="coerce")
        bad = converted.isna() & df[col].notna()
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            raise PipelineInputError(
                f"{src}: column '{col}', row {row + 1}: {df[col].iloc[row]!r} is not a number "
                "(feature columns must be numeric)"
            )
        df[col] = converted

    missing = df.isna()
    if missing.to_numpy().any():
        if params.missing == "error":
            row, colidx = (int(i[0]) for i in missing.to_numpy().nonzero())
            raise PipelineInputError(
                f"{src}: row {row + 1}, column '{df.columns[colidx]}': missing value "
                f"({int(missing.any(axis=1).sum())} rows have one; set ingest.missing: drop to drop them)"
            )
        df = df.loc[~missing.any(axis=1)].reset_index(drop=True)
        if len(df) == 0:
            raise PipelineInputError(f"{src}: every row has a missing value")

    task = params.task if params.task != "auto" else infer_task(df[params.label])
    if task == "regression" and not pd.api.types.is_numeric_dtype(df[params.label]):
        raise PipelineInputError(f"{src}: label '{params.label}' is not numeric, so ingest.task cannot be regression")
    if task in ("binary", "multiclass"):
        n = df[params.label].nunique()
        if n < 2:
            raise PipelineInputError(
                f"{src}: label '{params.label}' has a single class; a classifier needs two or more"
            )
        if task == "binary" and n != 2:
            raise PipelineInputError(f"{src}: ingest.task is binary but label '{params.label}' has {n} classes")
    df[features] = df[features].astype("float32")
    return df, task


def ingest(params: IngestParams, out_dir: Path) -> dict:
    raw, info = load_source(params)
    table, task = validate_table(raw, params)
    table.to_parquet(out_dir / RAW_TABLE, index=False)
    info.update(rows=len(table), columns=list(table.columns), label=params.label, task=task)
    info["summary"] = f"{len(table)} rows x {len(table.columns)} columns (task: {task})"
    return info


def prepare(raw_dir: Path, ingest: IngestParams, params: PrepareParams, info: dict) -> tuple[dict, dict]:
    task = info["task"]
    table = pd.read_parquet(raw_dir / RAW_TABLE)
    features = [c for c in table.columns if c != ingest.label]
    x = table[features].to_numpy(dtype=np.float32)
    if task == "regression":
        y, classes = table[ingest.label].to_numpy(dtype=np.float32).reshape(-1, 1), None
    else:
        y, classes = encode_classes(table[ingest.label].to_numpy())
    splits = shuffled_split(len(table), params)

    train_x = x[splits["train"]]
    mean = train_x.mean(axis=0) if params.normalize else np.zeros(x.shape[1], np.float32)
    std = train_x.std(axis=0) if params.normalize else np.ones(x.shape[1], np.float32)
    std = np.where(std < 1e-8, 1.0, std).astype(np.float32)  # constant columns stay finite

    arrays = {name: (((x[idx] - mean) / std).astype(np.float32), y[idx]) for name, idx in splits.items()}
    meta = {
        "features": features,
        "in_features": len(features),
        "input_shape": [len(features)],
        "label": ingest.label,
        "classes": classes,
        "normalization": {"mean": mean.tolist(), "std": std.tolist()},
    }
    return arrays, meta
