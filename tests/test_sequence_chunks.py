"""Text and series prepared in chunks: a corpus read a chunk of characters at a time and a series' windows
written a chunk at a time give the splits, vocabulary and metadata of the source taken whole; a bad byte late
in a corpus is refused naming its offset; the corpus is never held whole (memory bounded by the chunk)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipelines.config import DatasetParams
from pipelines.errors import PipelineInputError
from pipelines.handoffs.splits import read_split
from pipelines.modalities import text as text_modality
from pipelines.modalities.series import windows as series_windows
from pipelines.paths import DatasetPaths
from pipelines.stages.ingest import ingest
from pipelines.stages.prepare import prepare

ROOT = Path(__file__).resolve().parents[1]


def dataset(modality: str, ingest_params: dict, **prepare_params) -> DatasetParams:
    family = {"text": "lstm", "series": "gru"}[modality]
    return DatasetParams(
        modality=modality,
        ingest=ingest_params,
        prepare=prepare_params,
        train={"candidates": {"c": {"family": family}}},
        register={"model_name": "m"},
    )


def prepared(name: str, params: DatasetParams) -> tuple[dict, dict, dict[str, tuple[np.ndarray, np.ndarray]]]:
    info = ingest(name, params)
    meta = prepare(name, params)
    paths = DatasetPaths(name)
    splits = {split: read_split(paths.split_dir(split)) for split in ("train", "val", "test")}
    return info, meta, splits


def assert_same(whole, chunked) -> None:
    (info_a, meta_a, splits_a), (info_b, meta_b, splits_b) = whole, chunked
    assert info_a == info_b and meta_a == meta_b
    for split, (x, y) in splits_a.items():
        assert np.array_equal(x, splits_b[split][0]) and np.array_equal(y, splits_b[split][1]), split
        assert x.dtype == splits_b[split][0].dtype and y.dtype == splits_b[split][1].dtype


def corpus_text() -> str:
    """Python's own topic pages (text nobody wrote for this test), with CRLF line ends, a byte-order mark and
    characters of two to four bytes, so chunk cuts fall inside lines, words and multi-byte characters."""
    from pydoc_data.topics import topics

    body = "\n\n".join(topics[key] for key in sorted(topics)[:40])
    return "\ufeff" + body.replace("\n", "\r\n").replace(" the ", " thé ").replace(" and ", " and 🐍 ")


@pytest.mark.parametrize(
    "prepare_params", [{"context_length": 5}, {"context_length": 40, "max_tokens": 3000, "min_count": 1}]
)
def test_a_corpus_read_in_small_chunks_gives_what_one_piece_gives(in_tmp, monkeypatch, prepare_params):
    (in_tmp / "corpus.txt").write_bytes(corpus_text().encode("utf-8"))
    params = dataset("text", {"source": str(in_tmp / "corpus.txt")}, **prepare_params)
    whole = prepared("t", params)
    assert whole[0]["characters"] == len(corpus_text())  # a \r\n is two characters, as in the file
    monkeypatch.setattr(text_modality, "CHUNK_CHARS", 1009)  # cuts inside words and characters
    monkeypatch.setattr(text_modality, "WINDOW_BYTES", 8 * 100)  # windows written a few at a time
    chunked = prepared("t", params)
    assert_same(whole, chunked)
    raw = DatasetPaths("t").raw_dir / text_modality.RAW_CORPUS
    assert raw.read_bytes() == (in_tmp / "corpus.txt").read_bytes()  # ingest copies the corpus as it is


def test_a_bad_byte_late_in_a_corpus_is_refused_with_its_offset(in_tmp, monkeypatch):
    good = corpus_text().encode("utf-8")
    monkeypatch.setattr(text_modality, "CHUNK_CHARS", 1000)
    for bad, offset in ((good[:5000] + b"\xff" + good[5000:], 5000), (good[:999] + "é".encode()[:1], 999)):
        (in_tmp / "bad.txt").write_bytes(bad)
        with pytest.raises(PipelineInputError, match=rf"bad.txt: not UTF-8 text \(byte {offset}\)"):
            ingest("bad", dataset("text", {"source": str(in_tmp / "bad.txt")}))
        assert not DatasetPaths("bad").raw_dir.exists()  # nothing half-written


@pytest.mark.parametrize(
    "source, prepare_params",
    [
        ("statsmodels:co2", {"window": 52, "season_length": 52, "horizon": 4}),
        ("statsmodels:sunspots", {"window": 30, "season_length": 11, "transform": "relative"}),
    ],
)
def test_a_series_written_in_small_chunks_gives_what_one_piece_gives(in_tmp, monkeypatch, source, prepare_params):
    params = dataset("series", {"source": source, "missing": "interpolate"}, **prepare_params)
    whole = prepared("t", params)
    monkeypatch.setattr(series_windows, "CHUNK_BYTES", 4 * 100)  # a handful of windows a chunk
    assert_same(whole, prepared("t", params))


PREPARE_TEXT_IN_CHILD = """
import json, sys
from pipelines.config import DatasetParams
from pipelines.stages.ingest import ingest
from pipelines.stages.prepare import prepare
from pipelines.modalities import text
# Chunks far smaller than the corpus, so both sizes run in many chunks: what grows with the corpus then shows.
text.CHUNK_CHARS, text.WINDOW_BYTES = 2**16, 2**20
params = DatasetParams.model_validate_json(sys.argv[1])
ingest("t", params)
tokens = sum(prepare("t", params)["tokens"].values())
status = open("/proc/self/status").read().splitlines()
peak = int(next(l.split()[1] for l in status if l.startswith("VmHWM:"))) / 1024
print("RESULT " + json.dumps({"tokens": tokens, "peak_mib": peak}))
"""


@pytest.mark.slow
def test_text_prepare_memory_does_not_grow_with_the_corpus(in_tmp):
    """Ingest and prepare of a corpus (~4 MB) and of the same corpus 4 times over, each in a fresh process: peak
    resident memory within 10%."""
    from pydoc_data.topics import topics

    base = "\n\n".join(topics[key] for key in sorted(topics)).encode("utf-8")
    peaks = {}
    for times in (1, 4):
        folder = in_tmp / f"x{times}"
        folder.mkdir()
        (folder / "corpus.txt").write_bytes(base * 8 * times)
        params = dataset("text", {"source": str(folder / "corpus.txt")}, context_length=4)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.run(
            [sys.executable, "-c", PREPARE_TEXT_IN_CHILD, params.model_dump_json()],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
        peaks[times] = result["peak_mib"]
        print(f"{times}x: {result['tokens']} tokens, peak {result['peak_mib']:.0f} MiB")
    assert peaks[4] <= 1.1 * peaks[1]
