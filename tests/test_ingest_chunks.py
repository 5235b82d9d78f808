"""Ingest in chunks: a table read `ingest.chunk_rows` rows at a time, twice, gives the table, profile and
description of the table read in one piece; refusals name the row in whichever chunk it is; memory is
bounded by the chunk, not the table."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.config import DatasetParams
from pipelines.errors import PipelineInputError
from pipelines.paths import DatasetPaths
from pipelines.stages.ingest import ingest as ingest_stage

WHERE = DatasetPaths("t")


def table_dataset(**ingest) -> DatasetParams:
    return DatasetParams(
        modality="table", ingest=ingest, train={"candidates": {"fnn": {"family": "fnn"}}}, register={"model_name": "m"}
    )


def messy(rows: int = 600, seed: int = 1) -> pd.DataFrame:
    """Blanks in every kind of column (one only in a late chunk), yes/no, categories, dates as text, an id,
    free text, and a float label with whole-number classes and gaps."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "num": rng.normal(size=rows),
            "late_gap": rng.integers(0, 100, rows),
            "yesno": rng.choice(["yes", "no"], rows),
            "cat": rng.choice(["a", "b", "c", "d"], rows),
            "when": pd.date_range("2020-01-01", periods=rows).strftime("%Y-%m-%d"),
            "ident": [f"id{i}" for i in range(rows)],
            "words": [" ".join(rng.choice(["alpha", "beta", "gamma", "delta"], 6)) for _ in range(rows)],
            "target": rng.integers(0, 3, rows).astype(float),
        }
    )
    frame["late_gap"] = frame["late_gap"].astype(float)
    frame.loc[rng.choice(rows, 30), "num"] = np.nan
    frame.loc[rows - 40 : rows - 20, "late_gap"] = np.nan
    frame.loc[rng.choice(rows, 20), "cat"] = None
    frame.loc[rng.choice(rows, 10), "yesno"] = None
    frame.loc[rng.choice(rows, 8), "target"] = np.nan
    return frame


def ingested(**ingest) -> tuple[pd.DataFrame, dict, dict]:
    info = ingest_stage("t", table_dataset(**ingest))
    table = pd.read_parquet(WHERE.raw_dir / "table.parquet")
    profile = json.loads((WHERE.raw_dir / "profile.json").read_text())
    return table, profile, json.loads(json.dumps(info, default=str))


@pytest.mark.parametrize(
    "source, ingest",
    [
        ("messy.csv", {"label": "target"}),
        ("messy.csv", {"label": "target", "missing": "drop"}),
        ("messy.parquet", {"label": "target", "columns": {"ident": "category", "words": "text"}}),
        ("palmerpenguins:penguins", {"label": "species", "missing": "drop"}),
        ("sklearn:diabetes", {}),
    ],
)
def test_a_table_read_in_small_chunks_gives_what_one_piece_gives(in_tmp, source, ingest):
    frame = messy()
    frame.to_csv(in_tmp / "messy.csv", index=False)
    frame.to_parquet(in_tmp / "messy.parquet", index=False)
    whole = ingested(source=source, **ingest)
    chunked = ingested(source=source, chunk_rows=7, **ingest)
    pd.testing.assert_frame_equal(chunked[0], whole[0])
    assert chunked[1] == whole[1]
    assert chunked[2] == whole[2]
    if source.startswith("messy"):  # the file's own types, gaps and notes, found across chunks
        types = whole[2]["column_types"]
        assert types["when"] == "date" and types["yesno"] == "binary" and whole[2]["task"] == "multiclass"
        assert whole[0]["target"].dtype == np.int64 and whole[1]["columns"][1]["missing"] == 21


def test_refusals_name_the_row_in_a_late_chunk_and_nothing_is_written(in_tmp):
    frame = messy()
    frame["num"] = frame["num"].astype(object)
    frame.loc[555, "num"] = "n/a?"  # a typo in a column of numbers, in the 80th chunk of 7
    frame.to_csv(in_tmp / "typo.csv", index=False)
    with pytest.raises(PipelineInputError, match=r"column 'num', row 556: 'n/a\?' is not a number"):
        ingested(source="typo.csv", label="target", chunk_rows=7)
    messy().to_csv(in_tmp / "gaps.csv", index=False)
    with pytest.raises(PipelineInputError, match=r"row \d+, column '\w+': missing value \(\d+ rows have one"):
        ingested(source="gaps.csv", label="target", missing="error", chunk_rows=7)
    frame = messy()
    frame.loc[590, "num"] = 1e300  # beyond float32, in the last chunk
    frame.to_csv(in_tmp / "huge.csv", index=False)
    with pytest.raises(PipelineInputError, match=r"column 'num', row 591: 1e\+300 is infinite or too large"):
        ingested(source="huge.csv", label="target", chunk_rows=7)
    assert not WHERE.raw_dir.exists()


INGEST_CHILD = """
import json, sys
from pathlib import Path
from pipelines.config import DatasetParams
from pipelines.stages.ingest import ingest
info = ingest("t", DatasetParams.model_validate_json(sys.argv[1]))
status = Path("/proc/self/status").read_text().splitlines()
print(json.dumps({"rows": info["rows"], "dropped": info["dropped_columns"],
                  "peak_kib": int(next(line.split()[1] for line in status if line.startswith("VmHWM:")))}))
"""


def _ingest_in_child(params: DatasetParams) -> dict:
    """The ingest stage in a child process: what it found, and its own peak resident memory (VmHWM)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run(
        [sys.executable, "-c", INGEST_CHILD, params.model_dump_json()], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.splitlines()[-1])


@pytest.mark.slow  # ~30-60 s: two CSVs of 50k and 200k rows, each read three times in a child process
def test_ingest_memory_is_bounded_by_the_chunk_not_the_table(in_tmp):
    rng = np.random.default_rng(0)
    found = {}
    for scale in (1, 4):
        n = 50_000 * scale
        frame = pd.DataFrame(rng.normal(size=(n, 16)).round(4), columns=[f"n{i}" for i in range(16)])
        frame["c"] = rng.choice([f"level{j}" for j in range(12)], n)
        frame["id"] = [f"row-{i}" for i in rng.permutation(n)]  # 200k distinct at 4x: the estimate's range
        frame["label"] = rng.integers(0, 2, n)
        frame.to_csv(in_tmp / f"x{scale}.csv", index=False)
        del frame
        found[scale] = _ingest_in_child(table_dataset(source=f"x{scale}.csv", label="label", chunk_rows=8192))
        assert found[scale]["rows"] == n and found[scale]["dropped"] == ["id"]
        profile = json.loads((WHERE.raw_dir / "profile.json").read_text())
        distinct = next(c["distinct"] for c in profile["columns"] if c["column"] == "id")
        assert abs(distinct - n) <= 0.02 * n, distinct  # exact up to 65536 values, an estimate beyond
    peaks = {scale: f["peak_kib"] >> 10 for scale, f in found.items()}
    print(f"ingest's peak RSS: 1x {peaks[1]} MiB, 4x {peaks[4]} MiB")
    assert peaks[4] < peaks[1] * 1.15 + 10, peaks
