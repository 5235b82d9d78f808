"""Batch inference with a registered model, and sentence completion for next-word models.

    # INPUT: table CSV/Parquet, IDX/npz images, text, series
    python -m pipelines.predict NAME[:VERSION|:ALIAS] INPUT OUTPUT.csv
    python -m pipelines.predict complete NAME[:ALIAS] "the for statement" [--words 8]

The checkpoint is verified against its registry sha256 and loaded weights-only;
the normalization, vocabulary and class names it was trained with travel inside it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipelines.atomic import atomic_path
from pipelines.errors import PipelineInputError, cli_entry
from pipelines.modalities.sources import fetched, read_table
from pipelines.registry.cli import parse_ref
from pipelines.registry.local import open_registry


def load_registered(ref: str, registry: str):
    """(network, checkpoint info, card) of NAME[:VERSION|:ALIAS]; the sha256 is checked on the way."""
    import models  # noqa: F401
    from models.checkpoint import load_checkpoint

    name, spec = parse_ref(ref)
    version = open_registry(registry).get(name, spec)
    net, info = load_checkpoint(version.checkpoint)
    return net, info, version.card


def table_inputs(source: str, meta: dict) -> tuple[np.ndarray, pd.DataFrame]:
    with fetched(source) as local:
        table = read_table(local, source)
    missing = [c for c in meta["features"] if c not in table.columns]
    if missing:
        raise PipelineInputError(
            f"{source}: missing feature column(s) {', '.join(missing)} that the model was trained on"
        )
    x = table[meta["features"]].apply(pd.to_numeric, errors="coerce")
    if x.isna().to_numpy().any():
        row, col = (int(i[0]) for i in x.isna().to_numpy().nonzero())
        raise PipelineInputError(f"{source}: row {row + 1}, column '{meta['features'][col]}': missing or not a number")
    norm = meta["normalization"]
    scaled = (x.to_numpy(np.float32) - np.asarray(norm["mean"], np.float32)) / np.asarray(norm["std"], np.float32)
    return scaled.astype(np.float32), table


def image_inputs(source: str, meta: dict) -> tuple[np.ndarray, pd.DataFrame]:
    from pipelines.modalities.image import load_source, validate_images

    x, y, _, _, _ = load_source(source)
    x = validate_images(x, y, source).astype(np.float32)
    if list(x.shape[1:]) != meta["input_shape"]:
        raise PipelineInputError(f"{source}: images are {list(x.shape[1:])} but the model takes {meta['input_shape']}")
    norm = meta["normalization"]
    mean, std = np.asarray(norm["mean"], np.float32), np.asarray(norm["std"], np.float32)
    return ((x - mean[None, :, None, None]) / std[None, :, None, None]).astype(np.float32), pd.DataFrame({"label": y})


def text_ids(words: list[str], meta: dict) -> list[int]:
    index = {w: i for i, w in enumerate(meta["vocab"])}
    return [index.get(w, meta["unk_id"]) for w in words]


def text_inputs(source: str, meta: dict) -> tuple[np.ndarray, pd.DataFrame]:
    """One prompt per line; each is cut or left-padded (with <unk>) to the model's context length."""
    from pipelines.modalities.text import tokenize

    with fetched(source) as local:
        lines = [line for line in local.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise PipelineInputError(f"{source}: no prompts (expected one line of text per prompt)")
    n = meta["context_length"]
    rows = [([meta["unk_id"]] * n + text_ids(tokenize(line), meta))[-n:] for line in lines]
    return np.asarray(rows, np.int64), pd.DataFrame({"prompt": lines})


def series_inputs(source: str, meta: dict, column: str) -> tuple[np.ndarray, pd.DataFrame]:
    """Every full window of the series; the last one forecasts the step after the end."""
    with fetched(source) as local:
        table = read_table(local, source)
    if column not in table.columns:
        raise PipelineInputError(
            f"{source}: column '{column}' not found (use --column); columns are: {', '.join(map(str, table.columns))}"
        )
    values = pd.to_numeric(table[column], errors="coerce")
    if values.isna().any():
        raise PipelineInputError(
            f"{source}: row {int(values.isna().to_numpy().nonzero()[0][0]) + 1}: missing value "
            f"in '{column}' (fill or interpolate it first)"
        )
    w = meta["window"]
    if len(values) < w:
        raise PipelineInputError(f"{source}: {len(values)} values, fewer than the model's window of {w}")
    norm = meta["normalization"]
    scaled = ((values.to_numpy(np.float32) - norm["mean"]) / norm["std"]).astype(np.float32)
    x = np.lib.stride_tricks.sliding_window_view(scaled, w)
    frame = pd.DataFrame({"forecast_for_step": np.arange(w, len(values) + 1)})
    frame["actual"] = [float(values.iloc[i]) if i < len(values) else float("nan") for i in frame["forecast_for_step"]]
    return np.ascontiguousarray(x), frame


@torch.no_grad()
def predict_file(
    ref: str, source: str, out: Path, registry: str = "data/registry", column: str = "value", top_k: int = 3
) -> pd.DataFrame:
    from models.tasks import predict

    net, info, card = load_registered(ref, registry)
    meta = info["data_meta"]
    modality = meta["modality"]
    if modality == "table":
        x, frame = table_inputs(source, meta)
    elif modality == "image":
        x, frame = image_inputs(source, meta)
    elif modality == "text":
        x, frame = text_inputs(source, meta)
    else:
        x, frame = series_inputs(source, meta, column)
    logits = torch.cat([net(torch.from_numpy(x[i : i + 1024])) for i in range(0, len(x), 1024)])
    point, probs = predict(logits, info["task"], info["loss"])
    if info["task"] in ("regression", "forecast"):
        values = point.numpy()
        if info["task"] == "forecast":
            values = values * meta["normalization"]["std"] + meta["normalization"]["mean"]
        frame["prediction"] = values
    elif info["task"] == "next_word":
        top = probs.topk(min(top_k, probs.shape[1]), dim=1)
        frame["prediction"] = [meta["vocab"][i] for i in point.tolist()]
        frame[f"top{top_k}"] = [" ".join(meta["vocab"][i] for i in row) for row in top.indices.tolist()]
    else:
        classes = meta["classes"]
        frame["prediction"] = [classes[i] for i in point.tolist()]
        for j, name in enumerate(classes):
            frame[f"p_{name}"] = probs[:, j].numpy()
    with atomic_path(out) as tmp:  # no half-written predictions file
        frame.to_csv(tmp, index=False)
    return frame


@torch.no_grad()
def complete(ref: str, prompt: str, words: int = 8, registry: str = "data/registry") -> str:
    """Greedy completion: append the most likely next word, `words` times (never <unk>)."""
    from pipelines.modalities.text import tokenize

    net, info, _ = load_registered(ref, registry)
    if info["task"] != "next_word":
        raise PipelineInputError(f"{ref}: a {info['task']} model cannot complete sentences; pick a next-word model")
    meta = info["data_meta"]
    tokens = tokenize(prompt)
    if not tokens:
        raise PipelineInputError("complete: the prompt holds no words")
    n, unk = meta["context_length"], meta["unk_id"]
    ids = text_ids(tokens, meta)
    for _ in range(words):
        context = ([unk] * n + ids)[-n:]
        logits = net(torch.tensor([context]))[0]
        logits[unk] = float("-inf")
        ids.append(int(logits.argmax()))
    return " ".join(tokens + [meta["vocab"][i] for i in ids[len(tokens) :]])


@cli_entry
def main(argv: list[str] | None = None) -> None:
    import sys

    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["complete"]:
        parser = argparse.ArgumentParser(
            prog="python -m pipelines.predict complete",
            description="Complete a sentence with a registered next-word model.",
        )
        parser.add_argument("model", help="NAME[:VERSION|:ALIAS], e.g. text-next-word:production")
        parser.add_argument("prompt")
        parser.add_argument("--words", type=int, default=8)
        parser.add_argument("--registry", default="data/registry")
        a = parser.parse_args(args[1:])
        print(complete(a.model, a.prompt, a.words, a.registry))
        return
    parser = argparse.ArgumentParser(prog="python -m pipelines.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="NAME[:VERSION|:ALIAS], e.g. digits-cnn:production")
    parser.add_argument(
        "input",
        help="CSV/Parquet table or series, IDX folder/file or .npz images, or a text file (one prompt per line)",
    )
    parser.add_argument("output", type=Path, help="predictions CSV (written atomically)")
    parser.add_argument("--registry", default="data/registry")
    parser.add_argument("--column", default="value", help="series: the value column")
    a = parser.parse_args(args)
    frame = predict_file(a.model, a.input, a.output, a.registry, a.column)
    print(f"predict: {len(frame)} predictions -> {a.output}")


if __name__ == "__main__":
    main()
