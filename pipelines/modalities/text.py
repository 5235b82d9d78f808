"""Text for next-word prediction with the LSTM/GRU: a word vocabulary built on the training split only.

Raw form: corpus.txt (UTF-8). Prepared: windows of `context_length` word ids
that predict the next word's id; id 0 is the unknown-word token <unk>.
"""

from __future__ import annotations

import codecs
import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.config import IngestParams, PrepareParams
from pipelines.errors import PipelineInputError
from pipelines.handoffs.splits import SplitWriter
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


# Text is read this many characters at a time, cut after its last whitespace: no token holds whitespace, so
# the chunks' tokens are the whole text's. Ingest and prepare hold a chunk, the vocabulary's counts and one
# chunk of windows, never the corpus or its token list.
CHUNK_CHARS = 2**20
WINDOW_BYTES = 16 * 2**20  # windows (int64 ids) written at a time
WHITESPACE = re.compile(r"\s(?=\S*\Z)")  # the last whitespace character


def _text_chunks(pieces: Iterable[str]) -> Iterator[str]:
    """`pieces` of text regrouped into chunks that end at whitespace (the last: wherever the text ends)."""
    rest = ""
    for piece in pieces:
        text = rest + piece
        cut = WHITESPACE.search(text)
        if cut is None:  # no whitespace yet: the token may go on
            rest = text
            continue
        yield text[: cut.end()]
        rest = text[cut.end() :]
    if rest:
        yield rest


def corpus_tokens(path: Path, max_tokens: int | None = None) -> Iterator[list[str]]:
    """The tokens of a UTF-8 corpus file, a chunk of text at a time (at most `max_tokens` in all)."""

    def pieces() -> Iterator[str]:
        with open(path, encoding="utf-8") as corpus:
            while piece := corpus.read(CHUNK_CHARS):
                yield piece

    left = max_tokens
    for chunk in _text_chunks(pieces()):
        tokens = tokenize(chunk)
        if left is not None:
            tokens, left = tokens[:left], left - min(left, len(tokens))
        if tokens:
            yield tokens
        if left == 0:
            return


def copy_source(source: str, out: Path) -> dict:
    """The source's bytes copied to `out` a chunk at a time, checked as UTF-8 on the way; its sha256."""
    if source.startswith("python:"):
        out.write_text(builtin_text(source.split(":", 1)[1]), encoding="utf-8")
        return {"kind": "python"}
    digest, decoder, offset = hashlib.sha256(), codecs.getincrementaldecoder("utf-8")(), 0

    def check(block: bytes, final: bool = False) -> None:
        pending = len(decoder.getstate()[0])  # bytes of a character the previous block cut
        try:
            decoder.decode(block, final=final)
        except UnicodeDecodeError as err:
            byte = offset - pending + err.start
            raise PipelineInputError(f"{source}: not UTF-8 text (byte {byte}): expected a plain-text corpus") from None

    with fetched(source) as local, open(local, "rb") as src, open(out, "wb") as dst:
        while block := src.read(CHUNK_CHARS):
            check(block)
            digest.update(block)
            dst.write(block)
            offset += len(block)
        check(b"", final=True)  # a character cut by the end of the file
    return {"kind": "file", "sha256": digest.hexdigest()}


def ingest(params: IngestParams, out_dir: Path) -> dict:
    """The corpus copied to raw/ as it is (streamed: a file of any size), its characters and words counted."""
    corpus = out_dir / RAW_CORPUS
    info = copy_source(params.source, corpus)
    characters = words = 0
    with open(corpus, encoding="utf-8", newline="") as text:  # newline="": a \r\n is two characters
        while piece := text.read(CHUNK_CHARS):
            characters += len(piece)
    for tokens in corpus_tokens(corpus):
        words += sum(1 for token in tokens if token[0].isalnum())  # punctuation alone is not a text
    if words == 0:
        raise PipelineInputError(f"{params.source}: the text holds no words")
    info.update(
        source=params.source,
        characters=characters,
        words=words,
        task="next_word",
        summary=f"{words} words of text",
    )
    return info


def build_vocab(counts: Counter, max_vocab: int, min_count: int) -> list[str]:
    """<unk> first, then the most frequent words (ties broken alphabetically, so it is deterministic)."""
    ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return [UNK] + ranked[: max_vocab - 1]


def windows(ids: np.ndarray, context: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, context) inputs and the (N,) next word of each."""
    n = len(ids) - context
    x = np.lib.stride_tricks.sliding_window_view(ids[:-1], context)[:n]
    return np.ascontiguousarray(x, dtype=np.int64), ids[context:].astype(np.int64)


class _SplitWindows:
    """Writes the windows of one split's ids, given a chunk at a time: the last `context` ids of a chunk start
    the next one's first windows, so the windows are those of the split's ids taken whole."""

    def __init__(self, folder: Path, context: int) -> None:
        self.writer, self.context = SplitWriter(folder), context
        self.tail = np.empty(0, np.int64)

    def add(self, ids: np.ndarray) -> None:
        step = max(1, WINDOW_BYTES // (8 * (self.context + 1)))
        for start in range(0, len(ids), step):
            held = np.concatenate([self.tail, ids[start : start + step]])
            if len(held) > self.context:
                self.writer.write(*windows(held, self.context))
            self.tail = held[-self.context :]


def prepare(raw_dir: Path, ingest: IngestParams, params: PrepareParams, info: dict, out: Path) -> dict:
    corpus, context = raw_dir / RAW_CORPUS, params.context_length
    total = sum(len(tokens) for tokens in corpus_tokens(corpus, params.max_tokens))  # pass 1: the split's sizes
    parts = chronological_split(total, params, "words")
    for name, idx in parts.items():
        if len(idx) <= context:
            raise PipelineInputError(
                f"prepare.context_length: the {name} split has {len(idx)} words, fewer than context_length+1 "
                f"({context + 1}); use a longer text or a shorter context"
            )
    counts: Counter = Counter()  # pass 2: the vocabulary, from the training words only
    for tokens in corpus_tokens(corpus, len(parts["train"])):
        counts.update(tokens)
    prep = TextPreprocessor(context).fit(counts, params.max_vocab, params.min_count)
    bounds = [(name, idx.start, idx.stop) for name, idx in parts.items()]  # consecutive ranges
    writers = {name: _SplitWindows(out / name, context) for name, _, _ in bounds}
    with ExitStack() as open_writers:  # closed at the end; on an error, the caller's temporary folder is dropped
        for writer in writers.values():
            open_writers.enter_context(writer.writer)
        position = 0  # pass 3: ids, cut at the splits' bounds, written as each split's windows
        for tokens in corpus_tokens(corpus, params.max_tokens):
            ids = prep.transform(tokens)
            for name, begin, end in bounds:
                lo, hi = max(begin, position) - position, min(end, position + len(ids)) - position
                if lo < hi:
                    writers[name].add(ids[lo:hi])
            position += len(ids)
    meta = {
        "input_shape": [context],
        "vocab_size": len(prep.vocab),
        "unk_id": prep.unk_id,
        "context_length": context,
        "tokens": {name: int(len(idx)) for name, idx in parts.items()},
        "classes": None,
        "preprocessing": prep.state,
    }
    return meta


class TextPreprocessor:
    """Words -> ids with a vocabulary built on the training split only (<unk> is id 0)."""

    kind = "text"

    def __init__(self, context_length: int, vocab: list[str] | None = None, unk_id: int = 0):
        self.context_length, self.vocab, self.unk_id = context_length, list(vocab or [UNK]), unk_id
        self._index = {w: i for i, w in enumerate(self.vocab)}

    def fit(self, counts: Counter, max_vocab: int, min_count: int) -> TextPreprocessor:
        """The vocabulary from the training words' counts."""
        self.vocab = build_vocab(counts, max_vocab, min_count)
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
