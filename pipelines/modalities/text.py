"""Text for next-word prediction with the LSTM/GRU: a word vocabulary built on the training split only.

Raw form: corpus.txt (UTF-8). Prepared: windows of `context_length` word ids
that predict the next word's id; id 0 is the unknown-word token <unk>.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path

import numpy as np

from pipelines.config import IngestParams, PrepareParams
from pipelines.errors import PipelineInputError
from pipelines.modalities.common import chronological_split
from pipelines.modalities.sources import fetched

RAW_CORPUS = "corpus.txt"
UNK = "<unk>"
TOKEN = re.compile(r"[a-z]+(?:'[a-z]+)?|[0-9]+|[.,;:!?()]")


def tokenize(text: str) -> list[str]:
    """Lower-cased words, numbers and the punctuation that ends or splits clauses."""
    return TOKEN.findall(text.lower())


def builtin_text(name: str) -> str:
    if name == "pydoc-topics":
        # The topic pages of Python's own documentation (help("topics")): ~75k words of English.
        from pydoc_data.topics import topics

        return "\n\n".join(topics[key] for key in sorted(topics))
    raise PipelineInputError(f"ingest.source: python:{name}: unknown built-in text; use python:pydoc-topics")


def load_source(source: str) -> tuple[str, dict]:
    if source.startswith("python:"):
        return builtin_text(source.split(":", 1)[1]), {"kind": "python"}
    with fetched(source) as local:
        data = local.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise PipelineInputError(
                f"{source}: not UTF-8 text (byte {err.start}): expected a plain-text corpus"
            ) from None
    return text, {"kind": "file", "sha256": hashlib.sha256(data).hexdigest()}


def ingest(params: IngestParams, out_dir: Path) -> dict:
    text, info = load_source(params.source)
    words = sum(1 for token in tokenize(text) if token[0].isalnum())  # punctuation alone is not a text
    if words == 0:
        raise PipelineInputError(f"{params.source}: the text holds no words")
    (out_dir / RAW_CORPUS).write_text(text, encoding="utf-8")
    info.update(
        source=params.source, characters=len(text), words=words, task="next_word", summary=f"{words} words of text"
    )
    return info


def build_vocab(tokens: list[str], max_vocab: int, min_count: int) -> list[str]:
    """<unk> first, then the most frequent words (ties broken alphabetically, so it is deterministic)."""
    counts = Counter(tokens)
    ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return [UNK] + ranked[: max_vocab - 1]


def windows(ids: np.ndarray, context: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, context) inputs and the (N,) next word of each."""
    n = len(ids) - context
    x = np.lib.stride_tricks.sliding_window_view(ids[:-1], context)[:n]
    return np.ascontiguousarray(x, dtype=np.int64), ids[context:].astype(np.int64)


def prepare(raw_dir: Path, ingest: IngestParams, params: PrepareParams, info: dict) -> tuple[dict, dict]:
    tokens = tokenize((raw_dir / RAW_CORPUS).read_text(encoding="utf-8"))
    if params.max_tokens:
        tokens = tokens[: params.max_tokens]
    parts = chronological_split(len(tokens), params, "words")
    for name, idx in parts.items():
        if len(idx) <= params.context_length:
            raise PipelineInputError(
                f"prepare.context_length: the {name} split has {len(idx)} words, fewer than context_length+1 "
                f"({params.context_length + 1}); use a longer text or a shorter context"
            )
    vocab = build_vocab([tokens[i] for i in parts["train"]], params.max_vocab, params.min_count)
    index = {w: i for i, w in enumerate(vocab)}
    ids = np.array([index.get(t, 0) for t in tokens], dtype=np.int64)
    arrays = {name: windows(ids[idx], params.context_length) for name, idx in parts.items()}
    meta = {
        "input_shape": [params.context_length],
        "vocab": vocab,
        "vocab_size": len(vocab),
        "unk_id": 0,
        "context_length": params.context_length,
        "tokens": {name: int(len(idx)) for name, idx in parts.items()},
        "classes": None,
    }
    return arrays, meta
