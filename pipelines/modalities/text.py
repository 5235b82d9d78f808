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
import pandas as pd

from pipelines.config import IngestParams, PrepareParams
from pipelines.errors import PipelineInputError
from pipelines.modalities.common import chronological_split, write_splits
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


def prepare(raw_dir: Path, ingest: IngestParams, params: PrepareParams, info: dict, out: Path) -> dict:
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
    prep = TextPreprocessor(params.context_length).fit(
        [tokens[i] for i in parts["train"]], params.max_vocab, params.min_count
    )
    ids = prep.transform(tokens)
    arrays = {name: windows(ids[idx], params.context_length) for name, idx in parts.items()}
    meta = {
        "input_shape": [params.context_length],
        "vocab_size": len(prep.vocab),
        "unk_id": prep.unk_id,
        "context_length": params.context_length,
        "tokens": {name: int(len(idx)) for name, idx in parts.items()},
        "classes": None,
        "preprocessing": prep.state,
    }
    write_splits(out, arrays)  # held in memory whole: a source of this kind is read whole
    return meta


class TextPreprocessor:
    """Words -> ids with a vocabulary built on the training split only (<unk> is id 0)."""

    kind = "text"

    def __init__(self, context_length: int, vocab: list[str] | None = None, unk_id: int = 0):
        self.context_length, self.vocab, self.unk_id = context_length, list(vocab or [UNK]), unk_id
        self._index = {w: i for i, w in enumerate(self.vocab)}

    def fit(self, train_tokens: list[str], max_vocab: int, min_count: int) -> TextPreprocessor:
        self.vocab = build_vocab(train_tokens, max_vocab, min_count)
        self._index = {w: i for i, w in enumerate(self.vocab)}
        return self

    def ids(self, words: list[str]) -> list[int]:
        return [self._index.get(w, self.unk_id) for w in words]

    def transform(self, tokens: list[str]) -> np.ndarray:
        return np.array(self.ids(tokens), dtype=np.int64)

    def inverse(self, ids: list[int]) -> list[str]:
        return [self.vocab[i] for i in ids]

    def context(self, ids: list[int]) -> list[int]:
        """The model's input for what follows `ids`: the last context_length ids, left-padded with <unk>."""
        return ([self.unk_id] * self.context_length + list(ids))[-self.context_length :]

    @property
    def state(self) -> dict:
        return {"kind": self.kind, "context_length": self.context_length, "vocab": self.vocab, "unk_id": self.unk_id}

    @classmethod
    def from_state(cls, state: dict) -> TextPreprocessor:
        return cls(state["context_length"], state["vocab"], state["unk_id"])

    def read_inputs(self, source: str, column: str | None = None) -> tuple[np.ndarray, pd.DataFrame]:
        """One prompt per line; each is cut or left-padded (with <unk>) to the model's context length."""
        with fetched(source) as local:
            lines = [line for line in local.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not lines:
            raise PipelineInputError(f"{source}: no prompts (expected one line of text per prompt)")
        return self.prompts(lines), pd.DataFrame({"prompt": lines})

    def prompts(self, lines: list[str]) -> np.ndarray:
        """(prompts, context_length) word ids: each prompt cut or left-padded (with <unk>) to the context."""
        return np.asarray([self.context(self.ids(tokenize(line))) for line in lines], np.int64)
