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


class TablePreprocessor:
    """Feature scaling fitted on the training rows: (x - mean) / std per column. Targets stay as they are."""

    kind = "table"

    def __init__(self, features: list[str], mean: list[float] | None = None, std: list[float] | None = None):
        self.features, self.mean, self.std = list(features), mean, std

    def fit(self, train_x: np.ndarray, normalize: bool = True) -> TablePreprocessor:
        n = train_x.shape[1]
        mean = train_x.mean(axis=0) if normalize else np.zeros(n, np.float32)
        std = train_x.std(axis=0) if normalize else np.ones(n, np.float32)
        std = np.where(std < 1e-8, 1.0, std).astype(np.float32)  # constant columns stay finite
        self.mean, self.std = mean.tolist(), std.tolist()  # float32 values: exact through JSON
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        mean, std = np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)
        return ((x - mean) / std).astype(np.float32)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        return y  # regression targets are not scaled

    @property
    def state(self) -> dict:
        return {"kind": self.kind, "features": self.features, "mean": self.mean, "std": self.std}

    @classmethod
    def from_state(cls, state: dict) -> TablePreprocessor:
        return cls(state["features"], state["mean"], state["std"])

    def read_inputs(self, source: str, column: str | None = None) -> tuple[np.ndarray, pd.DataFrame]:
        """A user's table (CSV/Parquet) with the trained feature columns -> scaled inputs and the table."""
        with fetched(source) as local:
            table = read_table(local, source)
        missing = [c for c in self.features if c not in table.columns]
        if missing:
            raise PipelineInputError(
                f"{source}: missing feature column(s) {', '.join(missing)} that the model was trained on"
            )
        x = table[self.features].apply(pd.to_numeric, errors="coerce")
        if x.isna().to_numpy().any():
            row, col = (int(i[0]) for i in x.isna().to_numpy().nonzero())
            raise PipelineInputError(f"{source}: row {row + 1}, column '{self.features[col]}': missing or not a number")
        return self.transform(x.to_numpy(np.float32)), table


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
    prep = TablePreprocessor(features).fit(x[splits["train"]], params.normalize)
    arrays = {name: (prep.transform(x[idx]), y[idx]) for name, idx in splits.items()}
    meta = {
        "features": features,
        "in_features": len(features),
        "input_shape": [len(features)],
        "label": ingest.label,
        "classes": classes,
        "preprocessing": prep.state,
    }
    return arrays, meta
