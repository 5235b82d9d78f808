"""Raw instances of a v1 request -> the model's inputs, and its output rows -> one prediction per instance.

The instances are what the predict CLI reads from a file, one by one, and go through the same preprocessing
object (rebuilt from the checkpoint) and the same functions:
    table   {"column": value, ...}; a missing key or null is a missing value, handled as training did
    image   a nested array ((H, W), (C, H, W) or (H, W, C)) of pixels, or a base64 PNG/JPEG
            (a string, or {"b64": "..."} as TF-Serving sends binary data)
    text    a prompt ("the for statement is"): the next word and the top 3; {"prompt": ..., "words": N}:
            the prompt completed with N words
    series  the recent history [v1, v2, ...] (at least the model's window), or {"history": [...],
            "timestamps": [...]} when the model was trained with a time column: the forecast past its end
Errors are PipelineInputError with the predict CLI's messages; the row / instance they name is 1-based for
table columns (as in a file) and `instances[i]` (0-based, as in the JSON) otherwise.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipelines.errors import PipelineInputError

SOURCE = "request"  # how error messages name the request, where the CLI names the input file
SCALARS = (str, int, float, bool, type(None))
SCALAR_TYPES = set(SCALARS)  # exact types (JSON's): a set test per column instead of isinstance per value
MAX_WORDS = 200  # a completion longer than this is refused: one request must not hold a replica for long


@dataclass
class Unit:
    """Model inputs `x` and the output table `frame` score() fills; `owner[r]`: the instance of frame row r.

    `frame` is a DataFrame where the inputs bring columns of their own (a series' timestamps, a text's prompts),
    else a dict that takes score()'s columns: a DataFrame's column insertions cost more than a small batch's
    forward pass."""

    x: np.ndarray
    frame: pd.DataFrame | dict[str, Any]
    owner: np.ndarray


@dataclass
class Prepared:
    """A request's instances made ready: units to score, and predictions already known (completions)."""

    n: int
    units: list[Unit] = field(default_factory=list)
    done: dict[int, dict[str, Any]] = field(default_factory=dict)


def prepare(modality: str, prep: Any, instances: list[Any], complete: Any = None) -> Prepared:
    """`complete(tokens, words) -> words` finishes text prompts that ask for `words` (predict.next_words)."""
    if modality == "table":
        return _table(prep, instances)
    if modality == "image":
        return _images(prep, instances)
    if modality == "text":
        return _text(prep, instances, complete)
    return _series(prep, instances)


def predictions(task: str, unit: Unit) -> dict[int, dict[str, Any]]:
    """The scored frame's rows as one prediction per instance (keyed by its index in the request).

    Column by column, not row by row: a 256-row request spent more time in per-row pandas indexing than in
    the network."""
    frame, owner = unit.frame, unit.owner.tolist()  # DataFrame and dict alike: frame[name], `in`, iterating the names
    if task == "forecast":  # one row per step past the end of each history
        values, out = frame["prediction"].astype(float).tolist(), {}
        times = frame["timestamp"].tolist() if "timestamp" in frame else None
        for row, i in enumerate(owner):
            pred = out.setdefault(i, {"forecast": []} | ({"timestamps": []} if times is not None else {}))
            pred["forecast"].append(values[row])
            if times is not None:
                pred["timestamps"].append(None if pd.isna(times[row]) else pd.Timestamp(times[row]).isoformat())
        return out
    points = list(frame["prediction"])
    if task in ("binary", "multiclass"):
        columns = [c for c in frame if c.startswith("p_")]
        names = [c.removeprefix("p_") for c in columns]
        probs = np.column_stack([np.asarray(frame[c], np.float64) for c in columns]).tolist()
        return {
            i: {"class": str(p), "probabilities": dict(zip(names, row, strict=True))}
            for i, p, row in zip(owner, points, probs, strict=True)
        }
    if task == "regression":
        return {i: {"value": float(p)} for i, p in zip(owner, points, strict=True)}
    top = next(c for c in frame if c.startswith("top"))  # next_word
    return {
        i: {"next_word": str(p), top: str(t).split()} for i, p, t in zip(owner, points, list(frame[top]), strict=True)
    }


# ------------------------------------------------------------------ tables


def _table(prep: Any, instances: list[Any]) -> Prepared:
    """The rows taken apart by column (a list of values per feature) and encoded column by column: no
    DataFrame, and number columns straight to NumPy (`TablePreprocessor.transform_columns`)."""
    if not all(type(row) is dict for row in instances):  # (the check per row only when one is not a plain dict)
        for i, row in enumerate(instances):
            if not isinstance(row, dict):
                raise PipelineInputError(
                    f"instances[{i}]: expected an object of column values, e.g. {{{json_key(prep.features[0])}: ...}}"
                )
    # Missing keys are missing values (NaN/None), filled or refused as training decided; other keys are ignored.
    columns = {f: [row.get(f) for row in instances] for f in prep.features}
    if not all(set(map(type, values)) <= SCALAR_TYPES for values in columns.values()):
        _refuse_non_scalar(prep, instances)
    x = prep.transform_columns(columns, SOURCE)
    return Prepared(len(instances), [Unit(x, {}, np.arange(len(instances)))])


def _refuse_non_scalar(prep: Any, instances: list[dict]) -> None:
    """The first row (and in it, the first key) whose feature value is not a scalar, named."""
    features = set(prep.features)
    for i, row in enumerate(instances):
        for name, value in row.items():
            if not isinstance(value, SCALARS) and name in features:
                raise PipelineInputError(
                    f"instances[{i}]: column '{name}': expected a number, string, true/false or null, "
                    f"got {type(value).__name__}"
                )


def json_key(name: str) -> str:
    return '"' + name.replace('"', '\\"') + '"'


# ------------------------------------------------------------------ images


def _images(prep: Any, instances: list[Any]) -> Prepared:
    xs = [_image(prep, i, item) for i, item in enumerate(instances)]
    return Prepared(len(xs), [Unit(np.concatenate(xs), {}, np.arange(len(xs)))])


def _image(prep: Any, i: int, item: Any) -> np.ndarray:
    where = f"instances[{i}]"
    if isinstance(item, dict) and set(item) == {"b64"}:
        item = item["b64"]
    if isinstance(item, str):
        try:
            data = base64.b64decode(item, validate=True)
        except (binascii.Error, ValueError):
            raise PipelineInputError(
                f"{where}: not base64 (expected a base64 PNG/JPEG or an array of pixels)"
            ) from None
        return prep.from_encoded([io.BytesIO(data)], [where])
    if not isinstance(item, list):
        raise PipelineInputError(
            f"{where}: expected an image: an array of pixels (H, W), (C, H, W) or (H, W, C), or a base64 PNG/JPEG"
        )
    try:
        pixels = np.asarray(item, dtype=np.float32)
    except (ValueError, TypeError):
        raise PipelineInputError(f"{where}: not a rectangular array of numbers (rows of unequal length?)") from None
    if pixels.ndim not in (2, 3):
        raise PipelineInputError(
            f"{where}: an image must be (H, W), (C, H, W) or (H, W, C); got shape {list(pixels.shape)} "
            f"(the model takes {prep.input_shape})"
        )
    return prep.from_arrays(pixels[None], where)


# ------------------------------------------------------------------ text


def _text(prep: Any, instances: list[Any], complete: Any) -> Prepared:
    from pipelines.modalities.text import tokenize

    prompts, owners, done = [], [], {}
    for i, item in enumerate(instances):
        where = f"instances[{i}]"
        words = None
        if isinstance(item, dict):
            if "prompt" not in item:
                raise PipelineInputError(f'{where}: missing "prompt" (the text to continue)')
            item, words = item["prompt"], item.get("words")
        if not isinstance(item, str):
            raise PipelineInputError(f'{where}: expected a prompt string or {{"prompt": "...", "words": N}}')
        tokens = tokenize(item)
        if not tokens:
            raise PipelineInputError(f"{where}: the prompt holds no words")
        if words is None:
            prompts.append(item)
            owners.append(i)
            continue
        if not isinstance(words, int) or isinstance(words, bool) or not 1 <= words <= MAX_WORDS:
            raise PipelineInputError(f'{where}: "words" must be a whole number from 1 to {MAX_WORDS}, got {words!r}')
        done[i] = {"completion": " ".join(tokens + complete(tokens, words))}
    units = [Unit(prep.prompts(prompts), pd.DataFrame({"prompt": prompts}), np.asarray(owners))] if prompts else []
    return Prepared(len(instances), units, done)


# ------------------------------------------------------------------ series


def _series(prep: Any, instances: list[Any]) -> Prepared:
    units = [_history(prep, i, item) for i, item in enumerate(instances)]
    if prep.horizon == 1:  # one input row and one output row each: score them together
        frame = pd.concat([u.frame for u in units], ignore_index=True)
        units = [Unit(np.concatenate([u.x for u in units]), frame, np.concatenate([u.owner for u in units]))]
    return Prepared(len(instances), units)


def _history(prep: Any, i: int, item: Any) -> Unit:
    where = f"instances[{i}]"
    times = None
    if isinstance(item, dict):
        if "history" not in item:
            raise PipelineInputError(f'{where}: missing "history" (the last {prep.window} or more values)')
        item, times = item["history"], item.get("timestamps")
    if not isinstance(item, list) or not all(isinstance(v, (int, float, type(None))) for v in item):
        raise PipelineInputError(f"{where}: expected the series' recent values, a list of numbers")
    values = [math.nan if v is None else v for v in item]
    table = pd.DataFrame({"value": values})
    if times is not None:
        if not isinstance(times, list) or len(times) != len(values):
            raise PipelineInputError(f'{where}: "timestamps" must be a list of {len(values)} times, one per value')
        table[prep.time_column or "time"] = times
    x, frame = prep.from_table(table, "value", where)
    future = frame["forecast_for_step"].to_numpy() >= len(values)  # the forecast past the end of the history
    frame = frame[future].reset_index(drop=True)
    return Unit(x[-1:], frame, np.full(len(frame), i))
