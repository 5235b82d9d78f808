import http.server
import threading
from functools import partial

import numpy as np
import pandas as pd
import pytest

from pipelines.config import DatasetParams
from pipelines.errors import PipelineInputError
from pipelines.handoffs.splits import read_split
from pipelines.paths import DatasetPaths
from pipelines.stages.ingest import ingest as ingest_stage
from pipelines.stages.prepare import prepare as prepare_stage

WHERE = DatasetPaths("t")


def table_dataset(**ingest) -> DatasetParams:
    return DatasetParams(
        modality="table", ingest=ingest, train={"candidates": {"fnn": {"family": "fnn"}}}, register={"model_name": "m"}
    )


def ingest(**kw) -> dict:
    return ingest_stage("t", table_dataset(**kw))


def write_csv(path, text):
    path.write_text(text)
    return str(path)


def assert_no_output():
    """Neither the output nor a leftover temp dir (atomic_dir stages into .raw.*)."""
    assert not WHERE.raw_dir.exists()
    assert not list(WHERE.raw_dir.parent.glob(".t*"))


@pytest.mark.parametrize(
    "content, message, missing",
    [
        ("a,b,target\n1,2,0\n3,4,1\n", "label column 'label' (ingest.label) not found; columns are: a, b, target", ""),
        ("a,b,label\n1,2,0\n3,x,1\n", "column 'b', row 2: 'x' is not a number", ""),
        ("", "the file is empty", ""),
        ("a,b,label\n", "no data rows", ""),
        # Gaps are filled by default now; the strict check is ingest.missing: error.
        ("a,b,label\n1,,0\n3,4,1\n", "row 1, column 'b': missing value", "error"),
    ],
)
def test_bad_files_are_refused_with_a_clear_message_and_no_output(in_tmp, content, message, missing):
    src = write_csv(in_tmp / "input.csv", content)
    with pytest.raises(PipelineInputError) as err:
        ingest(source=src, label="label", **({"missing": missing} if missing else {}))
    assert message in str(err.value)
    assert src in str(err.value)
    assert_no_output()


def test_a_missing_file_is_named(in_tmp):
    with pytest.raises(PipelineInputError, match=r"nope\.csv: file does not exist"):
        ingest(source="nope.csv")
    assert_no_output()


def test_unknown_builtin_lists_the_choices(in_tmp):
    with pytest.raises(PipelineInputError, match="sklearn:breast_cancer"):
        ingest(source="sklearn:nope")


def test_missing_values_can_be_dropped(in_tmp):
    src = write_csv(in_tmp / "input.csv", "a,b,label\n1,,0\n3,4,1\n5,6,0\n7,8,1\n")
    info = ingest(source=src, label="label", missing="drop")
    assert info["rows"] == 3 and info["task"] == "binary"


def test_csv_parquet_and_http_sources_give_the_same_table(in_tmp):
    frame = pd.DataFrame({"x1": np.arange(40.0), "x2": np.arange(40.0) ** 2, "y": np.linspace(0, 1, 40)})
    frame.to_csv(in_tmp / "t.csv", index=False)
    frame.to_parquet(in_tmp / "t.parquet", index=False)
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(in_tmp))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        tables = []
        for src in ("t.csv", "t.parquet", f"http://127.0.0.1:{server.server_address[1]}/t.csv"):
            info = ingest(source=src, label="y")
            assert info["task"] == "regression"
            tables.append(pd.read_parquet(WHERE.raw_dir / "table.parquet"))
    finally:
        server.shutdown()
    for table in tables[1:]:
        pd.testing.assert_frame_equal(table, tables[0])


def test_prepare_is_deterministic_and_normalizes_on_train_only(in_tmp):
    params = table_dataset(source="sklearn:wine")
    params.prepare.seed = 7
    ingest_stage("t", params)
    meta = prepare_stage("t", params)
    first = {s: read_split(WHERE.split_dir(s))[0] for s in ("train", "val", "test")}
    prepare_stage("t", params)
    for split, x in first.items():
        np.testing.assert_array_equal(read_split(WHERE.split_dir(split))[0], x)
    assert meta["task"] == "multiclass" and len(meta["classes"]) == 3
    assert sum(meta["sizes"].values()) == 178
    # Train features are standardized with their own statistics; val/test are not re-fitted.
    np.testing.assert_allclose(first["train"].mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(first["train"].std(axis=0), 1, atol=1e-4)
    assert np.abs(first["test"].mean(axis=0)).max() > 1e-3
