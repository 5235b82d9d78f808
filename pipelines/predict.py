"""Batch inference with a registered model, and sentence completion for next-word models.

    # INPUT: table CSV/Parquet, images (a folder of photos, one image, a path,label CSV, IDX, npz), text, series
    python -m pipelines.predict NAME[:VERSION|:ALIAS] INPUT OUTPUT.csv
    python -m pipelines.predict complete NAME[:ALIAS] "the for statement" [--words 8]

The checkpoint is verified against its registry sha256 and loaded weights-only;
the preprocessing state (scaling, vocabulary) and class names it was trained with travel inside it.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from pipelines.atomic import atomic_path
from pipelines.errors import PipelineInputError, cli_entry
from pipelines.handoffs import CandidateInfo, PreparedMeta
from pipelines.modalities import Preprocessor, preprocessor_from_state
from pipelines.modalities.tables.chunks import DEFAULT_CHUNK_ROWS
from pipelines.registry.cli import parse_ref
from pipelines.registry.local import ModelRegistry, open_registry


def load_registered(ref: str, registry: str | ModelRegistry) -> tuple[nn.Module, CandidateInfo, dict]:
    """(network, checkpoint info, card) of NAME[:VERSION|:ALIAS] in a registry (its location, or opened);
    the sha256 is checked on the way.

    Checkpoints and cards of every schema version load: their info is upgraded on the way in.
    """
    from models.checkpoint import load_checkpoint

    name, spec = parse_ref(ref)
    opened = registry if isinstance(registry, ModelRegistry) else open_registry(registry)
    version = opened.get(name, spec)
    net, info = load_checkpoint(version.checkpoint)
    return net, CandidateInfo.model_validate(info), version.card


def _values(frame: pd.DataFrame, point, probs, meta: PreparedMeta, prep: Preprocessor, top_k: int) -> None:
    frame["prediction"] = prep.inverse(point.numpy())  # back in the data's units


def _forecast(frame: pd.DataFrame, point, probs, meta: PreparedMeta, prep: Preprocessor, top_k: int) -> None:
    values = prep.inverse(point.numpy())
    # One step: a forecast per window (row). A horizon: the last window's H values, one per row.
    frame["prediction"] = values if values.ndim == 1 else values[-1]


def _words(frame: pd.DataFrame, point, probs, meta: PreparedMeta, prep: Preprocessor, top_k: int) -> None:
    top = probs.topk(min(top_k, probs.shape[1]), dim=1)
    frame["prediction"] = prep.inverse(point.tolist())
    frame[f"top{top_k}"] = [" ".join(prep.inverse(row)) for row in top.indices.tolist()]


def _classes(frame: pd.DataFrame, point, probs, meta: PreparedMeta, prep: Preprocessor, top_k: int) -> None:
    frame["prediction"] = [meta.classes[i] for i in point.tolist()]
    for j, name in enumerate(meta.classes):
        frame[f"p_{name}"] = probs[:, j].numpy()


SHOWN_ROWS = 10  # a prediction per row is printed when there are at most this many
SCORE_BATCH = 1024  # rows the network scores at once

# The columns each task adds to the predictions table.
OUTPUT_COLUMNS = {
    "regression": _values,
    "forecast": _forecast,
    "next_word": _words,
    "binary": _classes,
    "multiclass": _classes,
}


def preprocessor_of(info: CandidateInfo) -> Preprocessor:
    """The preprocessing object the checkpoint was trained with, rebuilt from its plain-data state."""
    return preprocessor_from_state(info.data_meta.preprocessing.model_dump())


@torch.no_grad()
def score(
    net: nn.Module, info: CandidateInfo, prep: Preprocessor, x, frame: pd.DataFrame | dict, top_k: int = 3
) -> None:
    """Run the network on model inputs `x` (in batches of SCORE_BATCH rows) and add the task's prediction columns
    to `frame` (one row per input row; a dict takes them as well: the online endpoint's small batches).
    Shared by predict and the online endpoint (pipelines/serving)."""
    from models.tasks import predict

    batches = range(0, len(x), SCORE_BATCH)
    logits = torch.cat([net(torch.from_numpy(x[i : i + SCORE_BATCH])) for i in batches])
    point, probs = predict(logits, info.task, info.loss)
    OUTPUT_COLUMNS[info.task](frame, point, probs, info.data_meta, prep, top_k)


def input_chunks(prep: Preprocessor, source: str, column: str | None, chunk_rows: int) -> Iterator[tuple]:
    """(model inputs, rows) in chunks: tables stream `chunk_rows` rows at a time (a file larger than memory);
    series, text and images are read whole (windows, horizons and photo folders do not split into rows)."""
    if hasattr(prep, "read_input_chunks"):
        yield from prep.read_input_chunks(source, chunk_rows)
    else:
        yield prep.read_inputs(source, column)


def iter_predictions(
    ref: str,
    source: str,
    registry: str = "data/registry",
    column: str | None = None,
    top_k: int = 3,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> Iterator[pd.DataFrame]:
    """The predictions table, chunk by chunk: each chunk's input rows with the task's output columns."""
    net, info, _ = load_registered(ref, registry)
    prep = preprocessor_of(info)
    scored = False
    # Whole batches per chunk: the network sees the batches a one-chunk run would (a float32 matmul's rounding
    # depends on the batch's shape), so the output is the same file whatever the chunk size.
    chunk_rows = -(-chunk_rows // SCORE_BATCH) * SCORE_BATCH
    for x, frame in input_chunks(prep, source, column, chunk_rows):
        if not len(x):
            continue
        scored = True
        score(net, info, prep, x, frame, top_k)
        yield frame
    if not scored:
        raise PipelineInputError(f"{source}: no rows to predict (expected a header row and data rows)")


@dataclass
class Written:
    """What write_predictions wrote: the row count, predictions per class, the first and the last chunk's rows."""

    rows: int = 0
    counts: Counter = field(default_factory=Counter)
    head: pd.DataFrame | None = None
    last: pd.DataFrame | None = None


def write_predictions(chunks: Iterable[pd.DataFrame], out: Path) -> Written:
    """Append each chunk to a temp CSV, renamed to `out` when all are written: no half-written predictions."""
    written = Written()
    with atomic_path(out) as tmp, open(tmp, "w", newline="") as f:
        for frame in chunks:
            frame.to_csv(f, index=False, header=written.rows == 0)
            written.rows += len(frame)
            if any(c.startswith("p_") for c in frame.columns):
                written.counts.update(frame["prediction"].astype(str))
            written.head = frame.head(SHOWN_ROWS) if written.head is None else written.head
            written.last = frame
    return written


def predict_file(
    ref: str,
    source: str,
    out: Path,
    registry: str = "data/registry",
    column: str | None = None,
    top_k: int = 3,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> pd.DataFrame:
    """Predict on `source`, write `out` (atomically) and return the predictions table (in memory: the command
    line streams instead, so a table larger than memory is scored in bounded memory)."""
    frames = list(iter_predictions(ref, source, registry, column, top_k, chunk_rows))
    write_predictions(frames, out)
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


@torch.no_grad()
def complete(ref: str, prompt: str, words: int = 8, registry: str = "data/registry") -> str:
    """Greedy completion: append the most likely next word, `words` times (never <unk>)."""
    from pipelines.modalities.text import tokenize

    net, info, _ = load_registered(ref, registry)
    if info.task != "next_word":
        raise PipelineInputError(f"{ref}: a {info.task} model cannot complete sentences; pick a next-word model")
    tokens = tokenize(prompt)
    if not tokens:
        raise PipelineInputError("complete: the prompt holds no words")
    return " ".join(tokens + next_words(net, preprocessor_of(info), tokens, words))


@torch.no_grad()
def next_words(net: nn.Module, prep: Preprocessor, tokens: list[str], words: int) -> list[str]:
    """The `words` most likely words after `tokens`, one at a time (never <unk>)."""
    ids = prep.ids(tokens)
    for _ in range(words):
        logits = net(torch.tensor([prep.context(ids)]))[0]
        logits[prep.unk_id] = float("-inf")
        ids.append(int(logits.argmax()))
    return prep.inverse(ids[len(tokens) :])


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
        help="CSV/Parquet table or series; images: a folder (flat or of class subfolders), one .png/.jpg, "
        "a CSV of path,label, IDX folder/file or .npz; or a text file (one prompt per line)",
    )
    parser.add_argument("output", type=Path, help="predictions CSV (written atomically)")
    parser.add_argument("--registry", default="data/registry")
    parser.add_argument(
        "--column", default=None, help="series: the value column (default: the one it was trained on, else 'value')"
    )
    parser.add_argument(
        "--chunk-rows",
        type=int,
        default=DEFAULT_CHUNK_ROWS,
        help=f"tables: rows read, scored and written at a time, rounded up to a multiple of {SCORE_BATCH}; "
        f"memory grows with it, not with the file (default {DEFAULT_CHUNK_ROWS})",
    )
    a = parser.parse_args(args)
    if a.chunk_rows < 1:
        raise PipelineInputError(f"--chunk-rows: {a.chunk_rows} is not a positive number of rows")
    chunks = iter_predictions(a.model, a.input, a.registry, a.column, chunk_rows=a.chunk_rows)
    written = write_predictions(chunks, a.output)
    print(f"predict: {written.rows} predictions -> {a.output}")
    print_classes(written)
    if written.last is not None:
        print_forecast(written.last)


def print_forecast(frame: pd.DataFrame) -> None:
    """Series: the forecast past the end of the series, each value with its timestamp (or step number)."""
    if "forecast_for_step" not in frame:
        return
    ahead = frame[frame["actual"].isna()] if "actual" in frame else frame
    print(f"forecast past the end of the series ({len(ahead)} steps):")
    for _, row in ahead.iterrows():
        when = row["timestamp"] if "timestamp" in frame else f"step {row['forecast_for_step']}"
        print(f"  {when}: {row['prediction']:.6g}")


def print_classes(written: Written) -> None:
    """Classifiers: how many of each class, and each prediction when there are few (e.g. one photo)."""
    head = written.head
    if head is None or not written.counts:
        return
    classes = [c.removeprefix("p_") for c in head.columns if c.startswith("p_")]
    print("predicted: " + ", ".join(f"{name} {written.counts.get(name, 0)}" for name in classes))
    if written.rows <= SHOWN_ROWS:
        first = head.columns[0]
        for _, row in head.iterrows():
            print(f"  {row[first]}: {row['prediction']} (p={row['p_' + str(row['prediction'])]:.3f})")


if __name__ == "__main__":
    main()
