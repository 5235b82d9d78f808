"""Images (IDX, npz, digits), text (vocabulary, <unk>, windows) and series (missing values, windows)
through ingest + prepare."""

import gzip

import numpy as np
import pandas as pd
import pytest

from pipelines.config import DatasetParams
from pipelines.errors import PipelineInputError
from pipelines.modalities.image import read_idx
from pipelines.modalities.text import UNK, tokenize
from pipelines.paths import DatasetPaths
from pipelines.stages.ingest import ingest
from pipelines.stages.prepare import load_split, prepare

CANDIDATE = {"image": {"family": "cnn"}, "text": {"family": "lstm"}, "series": {"family": "gru"}}


def dataset(modality: str, ingest_params: dict, **prepare_params) -> DatasetParams:
    return DatasetParams(
        modality=modality,
        ingest=ingest_params,
        prepare=prepare_params,
        train={"candidates": {"c": CANDIDATE[modality]}},
        register={"model_name": "m"},
    )


def write_idx(path, array: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    (gzip.open if compress else open)(path, "wb").write(data)


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_style_idx_folder_keeps_its_own_test_split(in_tmp, compress):
    rng = np.random.default_rng(0)
    folder = in_tmp / "mnist"
    folder.mkdir()
    suffix = ".gz" if compress else ""
    images = {"train": rng.integers(0, 255, (50, 6, 5)), "t10k": rng.integers(0, 255, (20, 6, 5))}
    labels = {"train": np.arange(50) % 3, "t10k": np.arange(20) % 3}
    for part in ("train", "t10k"):
        write_idx(folder / f"{part}-images-idx3-ubyte{suffix}", images[part], compress)
        write_idx(folder / f"{part}-labels-idx1-ubyte{suffix}", labels[part], compress)
    np.testing.assert_array_equal(read_idx(folder / f"t10k-images-idx3-ubyte{suffix}"), images["t10k"])

    params = dataset("image", {"source": str(folder)})
    info = ingest("img", params)
    assert info["task"] == "multiclass" and info["image_shape"] == [1, 6, 5]
    meta = prepare("img", params)
    assert meta["sizes"]["test"] == 20 and meta["sizes"]["train"] + meta["sizes"]["val"] == 50
    x_test, y_test = load_split("img", "test")
    assert x_test.shape == (20, 1, 6, 5)
    np.testing.assert_array_equal(y_test, labels["t10k"])  # the source's test set, in order
    train_x, _ = load_split("img", "train")
    assert abs(float(train_x.mean())) < 1e-4  # normalized with training pixels only


def test_bad_idx_and_npz_are_refused_naming_the_file(in_tmp):
    (in_tmp / "bad-images-idx3-ubyte").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(PipelineInputError, match="bad-images-idx3-ubyte: not an IDX file"):
        read_idx(in_tmp / "bad-images-idx3-ubyte")
    np.savez(in_tmp / "a.npz", pixels=np.zeros((3, 4, 4)))
    with pytest.raises(PipelineInputError, match=r"a.npz: a .npz of images needs arrays 'x'"):
        ingest("img", dataset("image", {"source": str(in_tmp / "a.npz")}))
    assert not DatasetPaths("img").raw_dir.exists()


def test_npz_images_and_sklearn_digits(in_tmp):
    rng = np.random.default_rng(1)
    np.savez(in_tmp / "imgs.npz", x=rng.random((40, 7, 7, 3)).astype(np.float32), y=np.array(["cat", "dog"] * 20))
    ingest("npz", dataset("image", {"source": str(in_tmp / "imgs.npz")}))
    meta = prepare("npz", dataset("image", {"source": str(in_tmp / "imgs.npz")}))
    assert meta["input_shape"] == [3, 7, 7] and meta["classes"] == ["cat", "dog"] and meta["task"] == "binary"
    info = ingest("digits", dataset("image", {"source": "sklearn:digits"}))
    assert info["images"] == 1797 and info["image_shape"] == [1, 8, 8]


def test_text_vocabulary_is_built_on_the_training_split_only(in_tmp):
    train_words = "the cat sat on the mat . " * 30
    later_words = "a zebra ran . " * 10  # only in the val/test part of the corpus
    (in_tmp / "corpus.txt").write_text(train_words + later_words)
    params = dataset(
        "text",
        {"source": str(in_tmp / "corpus.txt")},
        context_length=3,
        min_count=2,
        val_fraction=0.1,
        test_fraction=0.1,
    )
    ingest("txt", params)
    meta = prepare("txt", params)
    assert meta["vocab"][0] == UNK and "zebra" not in meta["vocab"] and "cat" in meta["vocab"]
    x, y = load_split("txt", "test")
    assert x.shape[1] == 3 and x.dtype == np.int64 and len(x) == len(y)
    assert (y == 0).any()  # unseen words map to <unk>
    words = tokenize(train_words + later_words)
    x_train, y_train = load_split("txt", "train")
    vocab = meta["vocab"]
    assert [vocab[i] for i in x_train[0]] == words[:3] and vocab[y_train[0]] == words[3]


def test_text_errors_name_the_problem(in_tmp):
    (in_tmp / "empty.txt").write_text("  ... \n")
    with pytest.raises(PipelineInputError, match="empty.txt: the text holds no words"):
        ingest("txt", dataset("text", {"source": str(in_tmp / "empty.txt")}))
    (in_tmp / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(PipelineInputError, match="latin1.txt: not UTF-8 text"):
        ingest("txt", dataset("text", {"source": str(in_tmp / "latin1.txt")}))
    (in_tmp / "short.txt").write_text("one two three four five six seven eight nine ten")
    params = dataset("text", {"source": str(in_tmp / "short.txt")}, context_length=5)
    ingest("txt", params)
    with pytest.raises(PipelineInputError, match="prepare.context_length"):
        prepare("txt", params)


@pytest.mark.parametrize("policy, length", [("interpolate", 60), ("drop", 57)])
def test_series_missing_values_are_handled_explicitly(in_tmp, policy, length):
    values = np.sin(np.arange(60) / 3.0) * 10 + 50
    values[[5, 6, 30]] = np.nan
    pd.DataFrame({"value": values}).to_csv(in_tmp / "s.csv", index=False)
    params = dataset("series", {"source": str(in_tmp / "s.csv"), "missing": policy}, window=12, season_length=6)
    info = ingest("s", params)
    assert info["missing"] == 3 and info["length"] == length
    if policy == "interpolate":
        raw = pd.read_parquet(DatasetPaths("s").raw_dir / "series.parquet")["value"].to_numpy()
        assert raw[5] == pytest.approx(values[4] + (values[7] - values[4]) / 3, rel=1e-5)
    meta = prepare("s", params)
    assert sum(meta["sizes"].values()) == length - 12
    x_train, y_train = load_split("s", "train")
    x_test, _ = load_split("s", "test")
    assert x_train.shape[1] == 12 and y_train.shape[1] == 1
    # Chronological: consecutive windows shift by one step, and test comes after train.
    np.testing.assert_allclose(x_train[1, :-1], x_train[0, 1:])
    np.testing.assert_allclose(x_train[0, 1:].tolist() + [y_train[0, 0]], x_train[1])


def test_series_errors(in_tmp):
    pd.DataFrame({"value": [1.0, None, 3.0] * 10}).to_csv(in_tmp / "s.csv", index=False)
    with pytest.raises(
        PipelineInputError, match=r"s.csv: row 2: missing value \(10 missing in all; set ingest.missing"
    ):
        ingest("s", dataset("series", {"source": str(in_tmp / "s.csv")}))
    with pytest.raises(PipelineInputError, match="value column 'level' \\(ingest.column\\) not found"):
        ingest("s", dataset("series", {"source": str(in_tmp / "s.csv"), "column": "level"}))
    info = ingest("sun", dataset("series", {"source": "statsmodels:sunspots"}))
    assert info["length"] == 309 and info["missing"] == 0
    co2 = ingest("co2", dataset("series", {"source": "statsmodels:co2", "missing": "interpolate"}))
    assert co2["missing"] > 0  # a real series with gaps
