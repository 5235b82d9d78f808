"""Batch scoring that scales: predict streams a table in chunks of rows, the output is the same file
whatever the chunk size (and the same as scoring the whole table at once), and peak memory follows the
chunk size, not the file's size (measured: the child process's peak RSS on a file 10x larger)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from pipelines.modalities import preprocessor_from_state
from pipelines.modalities.sources import read_table
from pipelines.modalities.tables.chunks import read_table_chunks
from pipelines.predict import OUTPUT_COLUMNS, load_registered, main
from tests.conftest import ROOT
from tests.small_models import REGISTRY, register_small


def typed_per_chunk_table(n: int = 2600) -> pd.DataFrame:
    """Columns pandas types differently chunk by chunk: integers and True/False with gaps only after row 1100,
    a category of numbers first and words after row 2100, a date, a float."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "count": rng.integers(0, 50, n).astype(object),
            "flag": rng.choice([True, False], n).astype(object),
            "code": [str(v) for v in rng.integers(1, 4, n)],
            "day": pd.date_range("2024-01-01", periods=n, freq="D").strftime("%Y-%m-%d"),
            "amount": rng.normal(0, 1, n).round(3),
        }
    )
    frame.loc[1100::7, "count"] = None
    frame.loc[1100::9, "flag"] = None
    frame.loc[2100:, "code"] = rng.choice(["a", "b", "c", "2"], n - 2100)
    frame["label"] = np.where(frame["amount"] > 0, "up", "down")
    return frame


def predict_cli(monkeypatch, *args: str) -> None:
    """`python -m pipelines.predict ARGS` in this process."""
    monkeypatch.setattr(sys, "argv", ["predict", *args, "--registry", REGISTRY])
    main()


def whole_table_predictions(source: str) -> str:
    """What predict wrote before chunks: the whole table read at once, scored, written at once."""
    from models.tasks import predict

    net, info, _ = load_registered("t:1", REGISTRY)
    prep = preprocessor_from_state(info.data_meta.preprocessing.model_dump())
    x, frame = prep.read_inputs(source)
    with torch.no_grad():
        point, probs = predict(net(torch.from_numpy(x)), info.task, info.loss)
    OUTPUT_COLUMNS[info.task](frame, point, probs, info.data_meta, prep, 3)
    return frame.to_csv(index=False)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_chunks_are_typed_as_the_whole_file_and_the_output_is_the_same(in_tmp, suffix, monkeypatch):
    table = typed_per_chunk_table()
    table.to_csv("train.csv", index=False)
    register_small(
        "t",
        "table",
        {"source": "train.csv", "label": "label", "columns": {"code": "category"}},
        {"family": "fnn", "hidden": [4]},
    )
    rows = table.drop(columns=["label"])
    source = f"rows{suffix}"
    if suffix == ".csv":
        rows.to_csv(source, index=False)
    else:
        rows.astype({"count": "float64", "flag": "object"}).to_parquet(source)  # as a user's pandas writes it

    whole = read_table(in_tmp / source, source)
    chunks = list(read_table_chunks(in_tmp / source, source, chunk_rows=100))
    assert len(chunks) == 26 and {c["count"].dtype for c in chunks} == {whole["count"].dtype}
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), whole)

    for rows_at_a_time in (1000, 2000, 10**6):  # chunks of 1024 rows, of 2048, one chunk
        predict_cli(monkeypatch, "t:1", source, f"out-{rows_at_a_time}.csv", "--chunk-rows", str(rows_at_a_time))
    written = open("out-1000.csv").read()
    assert written == open("out-2000.csv").read() == open(f"out-{10**6}.csv").read() == whole_table_predictions(source)
    assert pd.read_csv("out-1000.csv").shape == (len(rows), len(rows.columns) + 3)  # prediction, p_down, p_up


def test_a_bad_value_in_a_later_chunk_names_its_row_in_the_file_and_writes_nothing(in_tmp, capsys, monkeypatch):
    table = typed_per_chunk_table()
    table.to_csv("train.csv", index=False)
    register_small(
        "t",
        "table",
        {"source": "train.csv", "label": "label", "columns": {"code": "category"}},
        {"family": "fnn", "hidden": [4]},
    )
    rows = table.drop(columns=["label"]).astype({"amount": object})
    rows.loc[2033, "amount"] = "lots"
    rows.to_csv("rows.csv", index=False)
    with pytest.raises(SystemExit) as exit_:
        predict_cli(monkeypatch, "t:1", "rows.csv", "out.csv", "--chunk-rows", "1024")
    assert exit_.value.code == 2
    assert "rows.csv: column 'amount', row 2034: 'lots' is not a number" in capsys.readouterr().err
    assert not os.path.exists("out.csv") and not [p for p in os.listdir() if p.startswith(".out.csv")]


# predict, then its peak resident memory (VmHWM, KiB) on stderr's last line. Not ru_maxrss: a child's
# high-water mark starts at its parent's at fork (this pytest process, torch loaded), whatever the child does.
PEAK_AFTER_PREDICT = """
import runpy, sys
try:
    runpy.run_module("pipelines.predict", run_name="__main__", alter_sys=True)
finally:
    print([line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0].split()[1], file=sys.stderr)
"""


def peak_rss_mb(source: str, chunk_rows: int) -> float:
    """Peak resident memory of `python -m pipelines.predict` on `source` (its own process, from exec), in MiB."""
    args = ["t:1", source, "out.csv", "--registry", REGISTRY, "--chunk-rows", str(chunk_rows)]
    done = subprocess.run(
        [sys.executable, "-c", PEAK_AFTER_PREDICT, *args],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return int(done.stderr.strip().splitlines()[-1]) / 1024


@pytest.mark.slow
def test_peak_memory_follows_the_chunk_size_not_the_file(in_tmp):
    rng = np.random.default_rng(0)
    train = pd.DataFrame(rng.normal(size=(200, 4)).round(4), columns=list("abcd"))
    train["label"] = np.where(train["a"] + train["b"] > 0, "yes", "no")
    train.to_csv("train.csv", index=False)
    register_small("t", "table", {"source": "train.csv", "label": "label"}, {"family": "fnn", "hidden": [4]})
    note = "a free-text note the model does not read, echoed to the output like every input column " * 4
    for name, n in (("small.csv", 10_000), ("big.csv", 100_000)):  # ~370 bytes a row: few rows, many bytes
        rows = pd.DataFrame(rng.normal(size=(n, 4)).round(4), columns=list("abcd"))
        rows["note"] = note
        rows.to_csv(name, index=False)
    grown_file = (os.path.getsize("big.csv") - os.path.getsize("small.csv")) / 2**20

    small, big = peak_rss_mb("small.csv", 2048), peak_rss_mb("big.csv", 2048)
    whole = peak_rss_mb("big.csv", 10**7)  # the same file in one chunk: what the measure sees when memory grows
    print(f"file +{grown_file:.0f} MiB; peak RSS: small {small:.0f}, big {big:.0f}, big in one chunk {whole:.0f} MiB")
    assert big - small < 0.2 * grown_file, (small, big, grown_file)
    assert whole - small > grown_file, (small, whole, grown_file)
    assert len(pd.read_csv("out.csv")) == 100_000
