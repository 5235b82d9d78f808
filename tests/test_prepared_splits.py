"""Prepared splits as bounded Parquet shards, and a table prepared in chunks.

- the shards round-trip any per-sample shape and stay within their size bound;
- the table preprocessing fitted chunk by chunk (`fit_chunks`) gives the state of a fit on the whole
  training table (within float rounding), and that state is what the whole-table formulas give;
- the stage prepares the same splits whatever its chunk size, refuses a bad value naming the table's row
  (not the chunk's) and leaves nothing behind;
- prepare's peak memory does not grow with the table: a 4x larger CSV prepares in the same resident memory
  (the child's ru_maxrss), while the same table read in one chunk does take more.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.config import DatasetParams
from pipelines.errors import PipelineInputError
from pipelines.handoffs.splits import iter_split, read_split, split_nbytes, split_parts, split_rows, write_split
from pipelines.modalities.tables import TablePreprocessor
from pipelines.modalities.tables.apply_columns import encode_columns
from pipelines.paths import DatasetPaths
from pipelines.stages.ingest import ingest as ingest_stage
from pipelines.stages.prepare import prepare as prepare_stage
from tests.test_tables import messy_table


def test_shards_round_trip_shapes_within_their_bound(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 3, 4, 4)).astype(np.float32)  # images: 192 bytes a sample
    y = rng.integers(0, 5, 1000)
    write_split(tmp_path / "img", x, y, shard_bytes=20_000)
    parts = split_parts(tmp_path / "img")
    assert len(parts) == 10  # 100 samples (200 bytes each with the label) a shard
    back_x, back_y = read_split(tmp_path / "img")
    np.testing.assert_array_equal(back_x, x)
    np.testing.assert_array_equal(back_y, y)
    assert back_x.flags.writeable
    assert split_rows(tmp_path / "img") == 1000 and split_nbytes(tmp_path / "img") == x.nbytes + y.nbytes
    chunks = list(iter_split(tmp_path / "img", rows=64))
    assert max(len(c[0]) for c in chunks) == 64
    np.testing.assert_array_equal(np.concatenate([c[0] for c in chunks]), x)
    horizons = rng.normal(size=(50, 3)).astype(np.float32)  # a target that is an array (series horizons)
    tokens = rng.integers(0, 100, (50, 8))  # int64 inputs (text contexts)
    write_split(tmp_path / "seq", tokens, horizons)
    back_tokens, back_horizons = read_split(tmp_path / "seq")
    assert back_tokens.dtype == np.int64 and back_horizons.shape == (50, 3)
    np.testing.assert_array_equal(back_horizons, horizons)


def _typed_table(n: int) -> tuple[pd.DataFrame, dict, dict, dict]:
    """The messy table as ingest types it, with a log number and constant column added."""
    frame = messy_table(n).drop(columns=["name", "comment", "label"])
    frame["income"] = np.random.default_rng(1).lognormal(10, 2, n)
    frame.loc[::7, "income"] = np.nan
    frame["constant"] = 3.0
    frame["signup"] = pd.to_datetime(frame["signup"])
    types = {
        "color": "category",
        "member": "binary",
        "size": "number",
        "city": "category",
        "signup": "date",
        "income": "log_number",
        "constant": "number",
    }
    missing = {c: int(frame[c].isna().sum()) for c in types}
    return frame, types, missing, {"member": ["yes", "no"]}


@pytest.mark.parametrize("fill", ["median", "mean", 0.5])
def test_a_fit_in_chunks_gives_the_whole_table_state(fill):
    train, types, missing, binary = _typed_table(601)
    whole = TablePreprocessor(list(types)).fit(train, types, missing, binary, fill=fill, max_onehot=10)

    def chunks():  # 601 rows in chunks of 50, labelled with their rows like prepare's chunks
        for start in range(0, len(train), 50):
            yield train.iloc[start : start + 50]

    chunked = TablePreprocessor(list(types)).fit_chunks(chunks, types, missing, binary, fill=fill, max_onehot=10)
    for a, b in zip(whole.columns, chunked.columns, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            if key == "fill":
                np.testing.assert_allclose(a[key], b[key], rtol=1e-12)
            else:
                assert a[key] == b[key], (a["name"], key)
    np.testing.assert_allclose(whole.mean, chunked.mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(whole.std, chunked.std, rtol=1e-5, atol=1e-6)

    # The state is what the whole-table formulas give: fills from the present values, scaling of the filled inputs.
    size = train["size"].to_numpy()
    expected = {"median": np.median(size[~np.isnan(size)]), "mean": size[~np.isnan(size)].mean(), 0.5: 0.5}[fill]
    assert next(c for c in chunked.columns if c["name"] == "size")["fill"] == [pytest.approx(expected, rel=1e-12)]
    dense, _ = encode_columns(chunked.columns, train, "train")
    scaled = [not (e.startswith(("color=", "member")) or e.endswith("_missing")) for e in chunked.entries()]
    scaled = np.array(scaled[: dense.shape[1]])
    std = np.where(dense.std(axis=0) < 1e-8, 1.0, dense.std(axis=0))
    np.testing.assert_allclose(np.asarray(chunked.mean)[scaled], dense.mean(axis=0)[scaled], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(chunked.std)[scaled], std[scaled], rtol=1e-5, atol=1e-6)
    assert chunked.std[chunked.entries().index("constant")] == 1.0


def _table_dataset(source, chunk_rows: int, **ingest) -> DatasetParams:
    return DatasetParams(
        modality="table",
        ingest={"source": str(source), "label": "label", "missing": "fill", **ingest},
        prepare={"chunk_rows": chunk_rows},
        train={"candidates": {"fnn": {"family": "fnn"}}},
        register={"model_name": "m"},
    )


def test_the_stage_prepares_the_same_splits_in_any_chunk_size(in_tmp):
    messy_table(700).to_csv(in_tmp / "messy.csv", index=False)
    outputs = []
    for chunk_rows in (10**6, 37):
        params = _table_dataset(in_tmp / "messy.csv", chunk_rows, columns={"name": "drop", "comment": "drop"})
        ingest_stage("t", params)
        meta = prepare_stage("t", params)
        where = DatasetPaths("t")
        outputs.append((meta, {s: read_split(where.split_dir(s)) for s in ("train", "val", "test")}))
        inputs = pd.read_parquet(where.test_inputs)
        assert len(inputs) == meta["sizes"]["test"] and "label" not in inputs.columns
        # The test rows' raw inputs encode to the test split.
        prep = TablePreprocessor.from_state(meta["preprocessing"])
        np.testing.assert_allclose(prep.transform(inputs), outputs[-1][1]["test"][0], rtol=1e-6)
    (meta_a, a), (meta_b, b) = outputs
    assert meta_a["sizes"] == meta_b["sizes"] and meta_a["class_counts_train"] == meta_b["class_counts_train"]
    for split in a:
        np.testing.assert_allclose(a[split][0], b[split][0], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(a[split][1], b[split][1])


def test_a_bad_value_deep_in_the_table_names_its_row_and_nothing_is_written(in_tmp):
    frame = pd.DataFrame({"a": np.arange(300.0), "label": [0, 1] * 150})
    frame.to_csv(in_tmp / "t.csv", index=False)
    params = _table_dataset(in_tmp / "t.csv", 40)
    ingest_stage("t", params)
    raw = DatasetPaths("t").raw_dir / "table.parquet"
    broken = pd.read_parquet(raw)
    broken["a"] = broken["a"].astype(str)  # a raw table from elsewhere than ingest: numbers as text
    broken.loc[257, "a"] = "twelve"  # in the seventh chunk of 40
    broken.to_parquet(raw, index=False)
    with pytest.raises(PipelineInputError, match=r"column 'a', row 258: 'twelve' is not a number"):
        prepare_stage("t", params)
    assert not DatasetPaths("t").prepared_dir.exists()


PREPARE_CHILD = """
import sys
from pathlib import Path
from pipelines.config import DatasetParams
from pipelines.stages.prepare import prepare
prepare("t", DatasetParams.model_validate_json(sys.argv[1]))
status = Path("/proc/self/status").read_text().splitlines()
print(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
"""


def _prepare_peak_kib(params: DatasetParams) -> int:
    """The prepare stage in a child process; its peak resident memory in KiB.

    The child's own high-water mark (VmHWM, of its address space since exec), not the ru_maxrss that wait4
    reports: Linux carries the forked parent's resident size over into a child's ru_maxrss, and the parent
    here is the test process with its tables."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run(
        [sys.executable, "-c", PREPARE_CHILD, params.model_dump_json()], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.split()[-1])


@pytest.mark.slow  # ~20-40 s: two child processes and a 100k-row ingest
def test_prepare_memory_is_bounded_by_the_chunk_not_the_table(in_tmp):
    rng = np.random.default_rng(0)
    rows = 25_000
    peaks = {}
    for scale in (1, 4):
        n = rows * scale
        frame = pd.DataFrame(rng.normal(size=(n, 20)).astype(np.float32), columns=[f"n{i}" for i in range(20)])
        frame["c"] = rng.choice([f"level{j}" for j in range(12)], n)
        frame["label"] = rng.integers(0, 2, n)
        frame.to_parquet(in_tmp / f"x{scale}.parquet", index=False)
        del frame
        params = _table_dataset(in_tmp / f"x{scale}.parquet", 5_000)
        ingest_stage("t", params)
        peaks[scale] = _prepare_peak_kib(params)
    print(f"prepare's peak RSS: 1x {peaks[1] >> 10} MiB, 4x {peaks[4] >> 10} MiB")
    assert peaks[4] < peaks[1] * 1.1 + 10 * 1024
