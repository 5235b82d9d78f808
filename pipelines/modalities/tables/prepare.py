"""Prepare a table: seeded split, the preprocessing fitted on the training rows, arrays for every split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.config import IngestParams, PrepareParams
from pipelines.modalities.common import encode_classes, shuffled_split
from pipelines.modalities.tables.encoding import TablePreprocessor
from pipelines.modalities.tables.ingest import RAW_TABLE


def _typed(info: dict, features: list[str]) -> tuple[dict[str, str], dict[str, int], dict[str, list[str]]]:
    """Column types, gap counts and binary pairs from ingest (a source.json from before typed columns: numbers)."""
    types = info.get("column_types") or {}
    # In the table's column order (source.json's keys may come back sorted).
    types = {c: types.get(c, "number") for c in features}
    return types, info.get("missing", {}), info.get("binary", {})


def prepare(raw_dir: Path, ingest: IngestParams, params: PrepareParams, info: dict) -> tuple[dict, dict]:
    task = info["task"]
    table = pd.read_parquet(raw_dir / RAW_TABLE)
    features = [c for c in table.columns if c != ingest.label]
    types, missing, binary = _typed(info, features)
    splits = shuffled_split(len(table), params)
    train = table.iloc[splits["train"]].reset_index(drop=True)
    prep = TablePreprocessor(list(types)).fit(
        train,
        types,
        missing,
        binary,
        normalize=params.normalize,
        fill=getattr(params, "fill", "median"),
        max_onehot=getattr(params, "max_onehot", 10),
    )
    if task == "regression":
        y_all = table[ingest.label].to_numpy(np.float64)
        prep.fit_target(y_all[splits["train"]], getattr(params, "target_scaling", "standard"))
        y, classes = prep.scale_target(y_all), None
    else:
        y, classes = encode_classes(table[ingest.label].to_numpy())
    x = prep.transform(table, str(raw_dir / RAW_TABLE))
    arrays = {name: (x[idx], y[idx]) for name, idx in splits.items()}
    entries = prep.entries()
    meta = {
        "features": entries,
        "in_features": len(entries),
        "input_shape": [len(entries)],
        "label": ingest.label,
        "classes": classes,
        "preprocessing": prep.state,
    }
    if prep.embeddings():
        meta["embeddings"] = prep.embeddings()
    # The test rows as ingest typed them: another version's preprocessing (a champion's) encodes them too.
    arrays["test_inputs"] = table.iloc[splits["test"]][features].reset_index(drop=True)
    return arrays, meta
