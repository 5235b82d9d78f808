"""Batch inference with a registered model, and sentence completion for next-word models.

    # INPUT: table CSV/Parquet, images (a folder of photos, one image, a path,label CSV, IDX, npz), text, series
    python -m pipelines.predict NAME[:VERSION|:ALIAS] INPUT OUTPUT.csv
    python -m pipelines.predict complete NAME[:ALIAS] "the for statement" [--words 8]

The checkpoint is verified against its registry sha256 and loaded weights-only;
the preprocessing state (scaling, vocabulary) and class names it was trained with travel inside it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from pipelines.atomic import atomic_path
from pipelines.errors import PipelineInputError, cli_entry
from pipelines.handoffs import CandidateInfo, PreparedMeta
from pipelines.modalities import Preprocessor, preprocessor_from_state
from pipelines.registry.cli import parse_ref
from pipelines.registry.local import open_registry


def load_registered(ref: str, registry: str) -> tuple[nn.Module, CandidateInfo, dict]:
    """(network, checkpoint info, card) of NAME[:VERSION|:ALIAS]; the sha256 is checked on the way.

    Checkpoints and cards of every schema version load: their info is upgraded on the way in.
    """
    from models.checkpoint import load_checkpoint

    name, spec = parse_ref(ref)
    version = open_registry(registry).get(name, spec)
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
def score(net: nn.Module, info: CandidateInfo, prep: Preprocessor, x, frame: pd.DataFrame, top_k: int = 3) -> None:
    """Run the network on model inputs `x` (in chunks of 1024 rows) and add the task's prediction columns to
    `frame` (one row per input row). Shared by predict and the online endpoint (pipelines/serving)."""
    from models.tasks import predict

    logits = torch.cat([net(torch.from_numpy(x[i : i + 1024])) for i in range(0, len(x), 1024)])
    point, probs = predict(logits, info.task, info.loss)
    OUTPUT_COLUMNS[info.task](frame, point, probs, info.data_meta, prep, top_k)


@torch.no_grad()
def predict_file(
    ref: str, source: str, out: Path, registry: str = "data/registry", column: str | None = None, top_k: int = 3
) -> pd.DataFrame:
    net, info, _ = load_registered(ref, registry)
    prep = preprocessor_of(info)
    x, frame = prep.read_inputs(source, column)
    score(net, info, prep, x, frame, top_k)
    with atomic_path(out) as tmp:  # no half-written predictions file
        frame.to_csv(tmp, index=False)
    return frame


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
    a = parser.parse_args(args)
    frame = predict_file(a.model, a.input, a.output, a.registry, a.column)
    print(f"predict: {len(frame)} predictions -> {a.output}")
    print_classes(frame)
    print_forecast(frame)


def print_forecast(frame: pd.DataFrame) -> None:
    """Series: the forecast past the end of the series, each value with its timestamp (or step number)."""
    if "forecast_for_step" not in frame:
        return
    ahead = frame[frame["actual"].isna()] if "actual" in frame else frame
    print(f"forecast past the end of the series ({len(ahead)} steps):")
    for _, row in ahead.iterrows():
        when = row["timestamp"] if "timestamp" in frame else f"step {row['forecast_for_step']}"
        print(f"  {when}: {row['prediction']:.6g}")


def print_classes(frame: pd.DataFrame, show: int = 10) -> None:
    """Classifiers: how many of each class, and each prediction when there are few (e.g. one photo)."""
    classes = [c.removeprefix("p_") for c in frame.columns if c.startswith("p_")]
    if not classes:
        return
    counts = frame["prediction"].astype(str).value_counts()
    print("predicted: " + ", ".join(f"{name} {int(counts.get(name, 0))}" for name in classes))
    if len(frame) <= show:
        first = frame.columns[0]
        for _, row in frame.iterrows():
            print(f"  {row[first]}: {row['prediction']} (p={row['p_' + str(row['prediction'])]:.3f})")


if __name__ == "__main__":
    main()
