"""The reference reader of an export's preprocessing.json: raw inputs -> the ONNX model's input, and its
outputs -> predictions. NumPy and the standard library only (no torch, no pandas, no project imports),
so a service in another language has a short, tested description of what to do to a raw input.

    spec = json.loads(Path("export/preprocessing.json").read_text())
    x = model_inputs(spec, instances)        # table rows (dicts), images, prompts or one series
    logits = onnxruntime_session.run(None, {spec["onnx"]["input"]: x})[0]
    point, probs = predictions(spec, logits) # class names / words / values in the data's units

tests/test_export_onnx.py checks that this matches `python -m pipelines.predict` on the same raw inputs.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

FLOAT32_MAX = float(np.finfo(np.float32).max)
# Text read as a gap: pandas' default NA values when it reads a CSV (what predict reads a table with).
MISSING_TEXTS = frozenset(
    ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA")
    + ("NULL", "NaN", "None", "n/a", "nan", "null")
)


class ExportInputError(ValueError):
    """A raw input the exported preprocessing cannot take: the message names the row/field and what was expected."""


# ---------------------------------------------------------------------------------------- dispatch


def model_inputs(spec: Mapping[str, Any], instances: Any) -> np.ndarray:
    """Raw inputs -> the array the ONNX model takes (float32, or int64 word ids for text).

    table   a sequence of rows, each a mapping of column -> value (an absent key is a missing value)
    image   pixels (N, C, H, W) or one (C, H, W) image, already `input_shape` (decode and resize photos first)
    text    a sequence of prompts (strings)
    series  one series: a sequence of values, oldest first (horizon 1: every window; else the last one)
    """
    state = spec["preprocessing"]
    kind = state["kind"]
    if kind == "table":
        return table_inputs(state, instances)
    if kind == "image":
        return image_inputs(state, instances)
    if kind == "text":
        return text_inputs(state, spec["tokenizer"], instances)
    if kind == "series":
        return series_inputs(state, instances)
    raise ExportInputError(f"preprocessing.json: unknown preprocessing kind {kind!r}")


def predictions(spec: Mapping[str, Any], logits: np.ndarray) -> tuple[list[Any], np.ndarray | None]:
    """(the prediction per input, class probabilities (N, K) or None), as `pipelines.predict` reports them.

    Classes: class names; next word: words; regression and forecasts: values in the label's units
    (a forecast of H steps is one row of H values per input)."""
    state, out = spec["preprocessing"], spec["outputs"]
    logits = np.asarray(logits, np.float32)
    if out["kind"] == "values":
        values = logits.reshape(-1) if logits.shape[-1] == 1 else logits
        return list(_inverse(state, values)), None
    if out["kind"] == "sigmoid":
        p1 = (1.0 / (1.0 + np.exp(-logits.reshape(-1).astype(np.float64)))).astype(np.float32)
        probs = np.stack([1 - p1, p1], axis=1)
    else:
        shifted = np.exp((logits - logits.max(axis=1, keepdims=True)).astype(np.float64))
        probs = (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)
    best = probs.argmax(axis=1)
    names = state["vocab"] if state["kind"] == "text" else spec["classes"]
    return [names[i] for i in best.tolist()], probs


def _inverse(state: Mapping[str, Any], values: np.ndarray) -> np.ndarray:
    """Network outputs back in the data's units (the table's target scaling, the series' transform)."""
    if state["kind"] == "series":
        out = values * state["std"] + state["mean"]
        return np.exp(out) if state.get("transform") in ("log", "log_relative") else out
    target = state.get("target")
    if state["kind"] != "table" or not target:
        return values
    out = np.asarray(values, np.float64) * target["std"] + target["mean"]
    return np.expm1(out) if target["scaling"] == "log" else out


# ---------------------------------------------------------------------------------------- tables


def canonical(value: Any) -> str:
    """A category or binary value as the string it is known by: 3.0 and '3' are both '3', True is 'true'."""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def level_of(value: Any, known: Collection[str]) -> str:
    """The level a category or binary value is known by. Text is also read as pandas reads a CSV column of
    such text: 'True'/'TRUE' as the level 'true', '2.0' as the number 2 (the level '2')."""
    text = canonical(value)
    if text in known or not isinstance(value, str):
        return text
    if text.lower() in ("true", "false") and text.lower() in known:
        return text.lower()
    try:
        number = canonical(float(text))
    except ValueError:
        return text
    return number if number in known else text


def is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, (float, np.floating)):
        return math.isnan(value)
    return isinstance(value, str) and value in MISSING_TEXTS


def _number(value: Any, row: int, column: str) -> float:
    if is_missing(value):
        return math.nan
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ExportInputError(f"row {row + 1}, column '{column}': {value!r} is not a number") from None
    if not math.isfinite(number) or abs(number) > FLOAT32_MAX:
        raise ExportInputError(
            f"row {row + 1}, column '{column}': {value!r} is infinite or too large for float32 "
            f"(at most {FLOAT32_MAX:.4g})"
        )
    return number


def _date_parts(value: Any, row: int, column: str) -> list[float]:
    """[year, month, day of week (Monday 0), day of year]; NaN for a gap. Dates come as ISO text or datetimes."""
    if is_missing(value):
        return [math.nan] * 4
    if isinstance(value, np.datetime64):
        value = value.astype("datetime64[us]").item()
    if not isinstance(value, (dt.date, dt.datetime)):
        try:
            value = dt.datetime.fromisoformat(str(value).strip())
        except ValueError:
            raise ExportInputError(
                f"row {row + 1}, column '{column}': {value!r} is not an ISO date (YYYY-MM-DD, optionally a time)"
            ) from None
    return [float(value.year), float(value.month), float(value.weekday()), float(value.timetuple().tm_yday)]


def _column_entries(spec: Mapping[str, Any], values: list[Any]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(dense entries (rows, width) float32 before scaling, or None; embedding codes (rows, 1) float32, or None)."""
    name, kind = spec["name"], spec["type"]
    if kind == "category":
        levels = {level: i for i, level in enumerate(spec["levels"])}
        gap = levels.get("<missing>", 0)  # a gap never seen in training: the unknown level (0)
        codes = np.array([gap if is_missing(v) else levels.get(level_of(v, levels), 0) for v in values], np.int64)
        if spec["embedding"]:
            return None, codes.reshape(-1, 1).astype(np.float32)
        return np.eye(len(spec["levels"]), dtype=np.float32)[codes], None
    if kind in ("number", "log_number"):
        raw = np.array([[_number(v, i, name)] for i, v in enumerate(values)], np.float64).reshape(-1, 1)
        if kind == "log_number":
            raw = np.sign(raw) * np.log1p(np.abs(raw))
    elif kind == "binary":
        one, zero = spec["positive"], spec["negative"]
        texts = [None if is_missing(v) else level_of(v, (one, zero)) for v in values]  # a third value: missing
        raw = np.array([1.0 if t == one else 0.0 if t == zero else math.nan for t in texts], np.float64).reshape(-1, 1)
    elif kind == "date":
        raw = np.array([_date_parts(v, i, name) for i, v in enumerate(values)], np.float64).reshape(-1, 4)
    else:
        raise ExportInputError(f"preprocessing.json: column '{name}' has unknown type {kind!r}")
    gaps = np.isnan(raw)
    if "fill" not in spec and gaps.any():
        raise ExportInputError(f"row {int(gaps.nonzero()[0][0]) + 1}, column '{name}': missing or not a number")
    raw = np.where(gaps, np.asarray(spec.get("fill", 0.0)), raw)
    parts = [raw] + ([gaps.any(axis=1, keepdims=True).astype(np.float64)] if spec.get("indicator") else [])
    return np.hstack([p.astype(np.float32) for p in parts]), None


def table_inputs(state: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Rows of column -> raw value -> (rows, dense entries + embedding codes) float32.

    Dense entries are standardized with the training split's mean/std; gaps are filled and flagged as in
    training; a category value never seen in training is the unknown level. Extra keys are ignored."""
    if isinstance(rows, (Mapping, str, bytes)):
        raise ExportInputError("a table takes a list of rows, each an object of column -> value")
    rows = [{str(k).strip(): v for k, v in _row(row, i).items()} for i, row in enumerate(rows)]
    columns = state.get("columns") or [{"name": f, "type": "number"} for f in state["features"]]
    dense, codes = [], []
    for spec in columns:
        entries, code = _column_entries(spec, [row.get(spec["name"]) for row in rows])
        dense += [entries] if entries is not None else []
        codes += [code] if code is not None else []
    n = len(rows)
    dense_all = np.hstack(dense) if dense else np.zeros((n, 0), np.float32)
    mean, std = np.asarray(state["mean"], np.float32), np.asarray(state["std"], np.float32)
    scaled = ((dense_all - mean) / std).astype(np.float32)
    return np.hstack([scaled] + ([np.hstack(codes)] if codes else [np.zeros((n, 0), np.float32)]))


def _row(row: Any, i: int) -> Mapping[str, Any]:
    if not isinstance(row, Mapping):
        raise ExportInputError(f"row {i + 1}: expected an object of column -> value, got {type(row).__name__}")
    return row


# ---------------------------------------------------------------------------------------- images, text, series


def image_inputs(state: Mapping[str, Any], pixels: Any) -> np.ndarray:
    """(N, C, H, W) (or one (C, H, W)) pixel values -> standardized per channel, float32."""
    x = np.asarray(pixels, np.float32)
    shape = list(state["input_shape"])
    if x.ndim == len(shape):
        x = x[None]
    if list(x.shape[1:]) != shape:
        raise ExportInputError(
            f"images are {list(x.shape[1:])} but the model takes {shape} (channels, height, width)"
            + (f"; resize to {state['image_size']}" if state.get("image_size") else "")
        )
    mean, std = np.asarray(state["mean"], np.float32), np.asarray(state["std"], np.float32)
    return ((x - mean[None, :, None, None]) / std[None, :, None, None]).astype(np.float32)


def text_inputs(state: Mapping[str, Any], tokenizer: Mapping[str, Any], prompts: Sequence[str]) -> np.ndarray:
    """Prompts -> (N, context_length) int64 word ids: the last words, left-padded with <unk> (id unk_id)."""
    if isinstance(prompts, str):
        prompts = [prompts]
    pattern = re.compile(tokenizer["pattern"])
    index = {w: i for i, w in enumerate(state["vocab"])}
    unk, n = state["unk_id"], state["context_length"]
    rows = []
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise ExportInputError(f"prompt {i + 1}: expected text, got {type(prompt).__name__}")
        text = prompt.lower() if tokenizer.get("lowercase", True) else prompt
        ids = [index.get(w, unk) for w in pattern.findall(text)]
        rows.append(([unk] * n + ids)[-n:])
    return np.asarray(rows, np.int64).reshape(len(rows), n)


def series_inputs(state: Mapping[str, Any], values: Sequence[float]) -> np.ndarray:
    """One series (oldest first) -> its windows (N, window) float32: every full window for a one-step model
    (the last forecasts the step after the end), the last window for a model of horizon H."""
    raw = np.asarray([_number(v, i, "value") for i, v in enumerate(values)], np.float64)
    if np.isnan(raw).any():
        raise ExportInputError(f"step {int(np.isnan(raw).nonzero()[0][0]) + 1}: missing value (fill it first)")
    w = state["window"]
    if len(raw) < w:
        raise ExportInputError(f"{len(raw)} values, fewer than the model's window of {w}")
    base = raw.astype(np.float32)
    if state.get("transform") in ("log", "log_relative"):
        if (base <= 0).any():
            step = int((base <= 0).nonzero()[0][0])
            raise ExportInputError(f"step {step + 1}: {base[step]} is not positive (the model takes logs)")
        base = np.log(base.astype(np.float64))
    scaled = ((base - state["mean"]) / state["std"]).astype(np.float32)
    windows = np.lib.stride_tricks.sliding_window_view(scaled, w)
    return np.ascontiguousarray(windows if state.get("horizon", 1) == 1 else windows[-1:])
