"""Champion vs challenger on the same data: the alias's current version scored on this run's test split.

A card's test metrics were measured on the test split of the data that version trained on; comparing
them with a new run's is comparing two datasets. So the version the alias points to (the champion) is
scored here on this run's test split, with the same scorer the candidates get, after its own
preprocessing (from its checkpoint) has encoded this run's test inputs:

- tables: the raw test rows prepare kept (test_inputs.parquet), encoded by the champion's columns;
- images, series: this run's scaled inputs taken back to pixels / values (exact up to float rounding),
  then scaled the champion's way;
- text: this run's word ids taken back to words, then the champion's ids (a word this run's vocabulary
  did not keep is <unk> for both).

A champion of another model line, or whose input shape differs (another window, image size or context
length), cannot be scored on these inputs: the record says why, and register follows promote_policy.

The test split is read and re-encoded chunk by chunk, and scored as the candidates are (scoring.score_chunks).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import torch

from pipelines.handoffs import CandidateInfo, PreparedMeta
from pipelines.handoffs.splits import SplitChunks
from pipelines.modalities import preprocessor_from_state
from pipelines.paths import DatasetPaths
from pipelines.registry.base import ModelRegistry
from pipelines.registry.model_line import describe, same_line, signature_of


def _table_inputs(raw: tuple[pd.DataFrame, str], run: Any, champ: Any, x: np.ndarray, y: np.ndarray, task: str):
    rows, source = raw
    y_champ = champ.scale_target(run.inverse(y.reshape(-1))).astype(np.float32) if task == "regression" else y
    return champ.transform(rows, source), y_champ.reshape(y.shape)


def _image_inputs(raw: None, run: Any, champ: Any, x: np.ndarray, y: np.ndarray, task: str):
    mean, std = np.asarray(run.mean, np.float32), np.asarray(run.std, np.float32)
    pixels = x * std[None, :, None, None] + mean[None, :, None, None]
    return champ.transform(pixels), y


def _series_inputs(raw: None, run: Any, champ: Any, x: np.ndarray, y: np.ndarray, task: str):
    return champ.transform(run.inverse(x)), champ.transform(run.inverse(y))


def _text_inputs(raw: None, run: Any, champ: Any, x: np.ndarray, y: np.ndarray, task: str):
    def again(ids: np.ndarray) -> np.ndarray:
        return champ.transform(run.inverse(ids.reshape(-1).tolist())).reshape(ids.shape)

    return again(x), again(y)


# A chunk of this run's test inputs and targets in the champion's preprocessing, per modality (tables: from the
# chunk's raw rows, and the file they came from).
RE_ENCODE = {"table": _table_inputs, "image": _image_inputs, "series": _series_inputs, "text": _text_inputs}


def _raw_rows(dataset: str, modality: str, test: SplitChunks) -> Iterator[tuple[pd.DataFrame, str] | None]:
    """The test split's raw rows in the split's chunks (tables: test_inputs.parquet holds them in its order)."""
    from pipelines.modalities.tables.chunks import read_table_chunks

    if modality != "table":
        while True:
            yield None
    path = DatasetPaths(dataset).test_inputs
    for rows in read_table_chunks(path, str(path), test.rows):  # indexed by file row: an error names it
        yield rows, str(path)


def _re_encoded(dataset: str, modality: str, task: str, run: Any, champ: Any, test: SplitChunks) -> Iterator[tuple]:
    for (x, y), raw in zip(test, _raw_rows(dataset, modality, test)):
        if raw is not None and len(raw[0]) != len(y):  # both read in chunks of test.rows: never, unless a file is cut
            raise ValueError(f"{raw[1]}: a chunk of {len(raw[0])} rows beside {len(y)} test samples")
        yield RE_ENCODE[modality](raw, run, champ, x, y, task)


def not_comparable_reason(held: dict[str, Any] | None, wanted: dict[str, Any]) -> str | None:
    """Why the champion cannot be scored on this run's inputs, or None when it can."""
    if held is None:
        return "its card records no model signature"
    if not same_line(held, wanted):
        return f"it is {describe(held)}, this run {describe(wanted)}"
    if wanted["modality"] != "table" and held.get("input_shape") != wanted.get("input_shape"):
        return f"it takes inputs of shape {held.get('input_shape')}, this run's are {wanted.get('input_shape')}"
    return None


@torch.no_grad()
def score_champion(
    dataset: str,
    run_meta: PreparedMeta,
    registry: ModelRegistry,
    name: str,
    alias: str,
    test: SplitChunks,
    batch_size: int = 1024,
) -> dict[str, Any] | None:
    """{version, alias, comparable, test/<metric>...} for the version `alias` points to; None when it is unset.

    Not comparable: {version, alias, comparable: False, reason}."""
    from models.checkpoint import load_checkpoint
    from pipelines.evaluation.scoring import score_chunks

    number = registry.aliases(name).get(alias) if name in registry.list_models() else None
    if number is None:
        return None
    record: dict[str, Any] = {"version": number, "alias": alias}
    reason = not_comparable_reason(registry.get_card(name, number).get("signature"), signature_of(run_meta))
    if reason is not None:
        return record | {"comparable": False, "reason": f"{name} v{number} was not scored on this test split: {reason}"}
    net, info = load_checkpoint(registry.get(name, number, verify=True).checkpoint)
    champ_meta = CandidateInfo.model_validate(info).data_meta.dump()
    run_prep = preprocessor_from_state(run_meta.preprocessing.model_dump())
    champ_prep = preprocessor_from_state(champ_meta["preprocessing"])
    chunks = _re_encoded(dataset, run_meta.modality, run_meta.task, run_prep, champ_prep, test)
    # The scale of "a naive forecast's error" is this run's data's (MASE compares on the same series).
    scored_meta = champ_meta | {"mase_scale": run_meta.mase_scale}
    scores, *_ = score_chunks(scored_meta, net, info["loss"], chunks, batch_size)
    scalar = {k: v for k, v in scores.items() if isinstance(v, float | int) and not isinstance(v, bool)}
    tested = {f"test/{k}": float(v) for k, v in scalar.items()}
    return record | {"comparable": True} | tested
