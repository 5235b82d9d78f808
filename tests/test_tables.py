"""Users' own tables as they are: typed columns, gaps, categories (one-hot and embedded), the profile,
regression targets scaled and restored, and bad tables refused naming row and column.

Stage functions run in-process on small tables; networks are trained with a plain torch loop on the
prepared arrays (the pipeline's trainer is covered by tests/test_tables_flow.py).
"""

import json

import numpy as np
import pandas as pd
import pytest

from pipelines.config import DatasetParams
from pipelines.errors import PipelineInputError
from pipelines.modalities import preprocessor_from_state
from pipelines.modalities.common import shuffled_membership, shuffled_split
from pipelines.paths import DatasetPaths
from pipelines.stages.ingest import ingest as ingest_stage
from pipelines.stages.prepare import load_split
from pipelines.stages.prepare import prepare as prepare_stage

WHERE = DatasetPaths("t")
COLORS = ["red", "green", "blue", "black"]


def messy_table(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """Strings, yes/no, an identifier, free text, a date, blanks in numbers and categories, a few blank labels.

    The label depends only on `color` and on `size` (partly missing): red/blue push it up, size pushes it up.
    """
    rng = np.random.default_rng(seed)
    color = rng.choice(COLORS, n)
    size = rng.normal(0, 1, n)
    score = np.where(np.isin(color, ["red", "blue"]), 1.5, -1.5) + 1.5 * size
    frame = pd.DataFrame(
        {
            "name": [f"person-{i:05d}" for i in range(n)],
            "color": color.astype(object),
            "member": rng.choice(["yes", "no"], n).astype(object),
            "size": size,
            "city": rng.choice([f"city{i}" for i in range(40)], n),
            "signup": pd.date_range("2020-01-01", periods=n, freq="D").strftime("%Y-%m-%d"),
            "comment": [f"customer said the thing number {i} was fine" for i in range(n)],
            "label": np.where(score > 0, "good", "bad").astype(object),
        }
    )
    frame.loc[rng.choice(n, n // 10, replace=False), "size"] = np.nan
    frame.loc[rng.choice(n, n // 20, replace=False), "color"] = None
    frame.loc[rng.choice(n, n // 20, replace=False), "member"] = None
    frame.loc[[3, 17, 42], "label"] = None
    return frame


def dataset(source: str, label: str = "label", ingest: dict | None = None, prepare: dict | None = None):
    return DatasetParams(
        modality="table",
        ingest={"source": source, "label": label, **(ingest or {})},
        prepare=prepare or {},
        train={"candidates": {"fnn": {"family": "fnn"}}},
        register={"model_name": "m"},
    )


def ingest_and_prepare(source: str, **kw) -> tuple[dict, dict]:
    params = dataset(source, **kw)
    return ingest_stage("t", params), prepare_stage("t", params)


def write(frame: pd.DataFrame, path) -> str:
    frame.to_csv(path, index=False)
    return str(path)


def fit_fnn(meta: dict, task: str, loss: str, epochs: int = 300, hidden=(32, 16), seed: int = 0):
    """Full-batch Adam on the prepared training split; returns the network."""
    import torch

    import models
    from models.fnn import FnnCandidate
    from models.tasks import loss_target, make_loss, output_size

    n_classes = len(meta["classes"]) if meta.get("classes") else None
    spec = FnnCandidate(hidden=list(hidden), dropout=0.0).model_spec(meta, output_size(task, loss, n_classes))
    torch.manual_seed(seed)
    net = models.create_model(spec.pop("family"), **spec)
    x, y = (torch.from_numpy(a) for a in load_split("t", "train"))
    vx, vy = (torch.from_numpy(a) for a in load_split("t", "val"))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    criterion = make_loss(loss)
    best = (float("inf"), None)
    for _ in range(epochs):  # keep the weights of the best validation loss, as the pipeline's early stopping does
        opt.zero_grad()
        criterion(net(x), loss_target(loss, y)).backward()
        opt.step()
        with torch.no_grad():
            val = float(criterion(net(vx), loss_target(loss, vy)))
        if val < best[0]:
            best = (val, {k: v.clone() for k, v in net.state_dict().items()})
    net.load_state_dict(best[1])
    return net.eval()


def outputs(net, split: str) -> tuple[np.ndarray, np.ndarray]:
    import torch

    x, y = load_split("t", split)
    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy(), y


# ------------------------------------------------------------------ types, gaps, profile


def test_a_messy_table_is_typed_profiled_and_filled_without_editing(in_tmp, capsys):
    frame = messy_table()
    info = ingest_stage("t", dataset(write(frame, in_tmp / "messy.csv")))
    assert info["column_types"] == {
        "color": "category",
        "member": "binary",
        "size": "number",
        "city": "category",
        "signup": "date",
    }
    assert sorted(info["dropped_columns"]) == ["comment", "name"]
    assert info["binary"] == {"member": ["yes", "no"]}  # yes is 1
    assert info["rows_dropped"] == 3 and info["rows"] == len(frame) - 3
    out = capsys.readouterr().out
    assert "'name' looks like an identifier" in out and "'comment' looks like free text" in out
    assert "dropped 3 row(s) with a missing label" in out

    profile = json.loads(WHERE.raw_profile.read_text())
    rows = {r["column"]: r for r in profile["columns"]}
    assert profile["rows"] == len(frame) and profile["source"].endswith("messy.csv")
    assert rows["size"]["type"] == "number" and rows["size"]["missing"] == 60
    assert rows["size"]["min"] == pytest.approx(frame["size"].min()) and rows["size"]["max"] > 2
    assert rows["color"]["missing"] == 30 and rows["color"]["distinct"] == 4
    assert rows["member"]["positive"] == "yes" and rows["city"]["distinct"] == 40
    assert rows["name"]["type"] == "identifier" and "dropped" in rows["name"]["note"]
    assert rows["signup"]["min"] == "2020-01-01" and rows["label"]["missing"] == 3
    assert rows["label"]["role"] == "label" and rows["label"]["type"] == "binary"


def test_column_types_can_be_set_and_unknown_names_are_refused(in_tmp):
    src = write(messy_table(100), in_tmp / "messy.csv")
    info = ingest_stage(
        "t", dataset(src, ingest={"columns": {"name": "category", "city": "drop", "size": "log_number"}})
    )
    assert info["column_types"]["name"] == "category" and "city" not in info["column_types"]
    assert info["column_types"]["size"] == "log_number"
    with pytest.raises(PipelineInputError, match=r"ingest.columns: no feature column 'colour', 'label' \(the label\)"):
        ingest_stage("t", dataset(src, ingest={"columns": {"colour": "category", "label": "number"}}))


@pytest.mark.parametrize("n, seed", [(3, 0), (600, 0), (1_234_567, 7)])
def test_a_tables_split_membership_holds_the_rows_of_the_shuffled_split(n, seed):
    """A table's prepare keeps each row's split in a byte (shuffled_membership), not index arrays: the same rows."""
    params = dataset("x").prepare.model_copy(update={"seed": seed})
    codes = {"train": 0, "val": 1, "test": 2}
    membership = shuffled_membership(n, params, codes)
    assert membership.dtype == np.int8 and len(membership) == n
    for name, idx in shuffled_split(n, params).items():
        assert np.array_equal(np.flatnonzero(membership == codes[name]), idx), name


def test_prepare_fits_fills_levels_and_scaling_on_the_training_rows_only(in_tmp):
    frame = messy_table()
    info, meta = ingest_and_prepare(write(frame, in_tmp / "messy.csv"), prepare={"max_onehot": 10})
    state = meta["preprocessing"]
    specs = {s["name"]: s for s in state["columns"]}
    table = pd.read_parquet(WHERE.raw_dir / "table.parquet")
    train = table.iloc[shuffled_split(len(table), dataset("x").prepare)["train"]]
    assert specs["size"]["fill"] == [pytest.approx(train["size"].median())] and specs["size"]["indicator"]
    assert specs["color"]["levels"] == ["<unknown>", "<missing>", "black", "blue", "green", "red"]
    assert not specs["color"]["embedding"] and specs["city"]["embedding"]  # 40 levels > max_onehot
    assert meta["embeddings"] == [[41, 13]]  # 40 cities + the unknown level
    assert meta["features"][:3] == ["color=<unknown>", "color=<missing>", "color=black"]
    assert "size_missing" in meta["features"] and meta["features"][-1] == "city"
    assert meta["input_shape"] == [len(meta["features"])]
    x = load_split("t", "train")[0]
    assert np.isfinite(x).all()
    size = meta["features"].index("size")
    assert abs(x[:, size].mean()) < 1e-5 and abs(x[:, size].std() - 1) < 1e-3
    assert set(np.unique(x[:, -1])) <= set(range(41))  # city codes, not scaled

    # The same object encodes a raw row with an unseen category, a blank number and a third 'member' value.
    prep = preprocessor_from_state(json.loads(json.dumps(state)))  # plain JSON data
    raw = frame.iloc[:2].copy()
    raw.loc[0, ["color", "city", "size", "member"]] = ["purple", "atlantis", np.nan, "maybe"]
    row = prep.transform(raw)
    assert row.shape == (2, len(meta["features"])) and np.isfinite(row).all()
    assert row[0, meta["features"].index("color=<unknown>")] == 1 and row[0, -1] == 0  # the unknown level
    assert row[0, meta["features"].index("size_missing")] == 1 and row[0, meta["features"].index("member_missing")]
    assert prep.unseen(raw) == {"color": 1, "city": 1}


@pytest.mark.parametrize(
    "cell, message",
    [
        ("inf", "column 'size', row 5: inf is infinite or too large for float32"),
        ("-inf", "column 'size', row 5: -inf is infinite or too large for float32"),
        ("1e308", "column 'size', row 5: 1e+308 is infinite or too large for float32"),
    ],
)
def test_infinite_and_huge_numbers_are_refused_naming_row_and_column(in_tmp, cell, message):
    text = "size,color,label\n" + "".join(f"{i},{c},{i % 2}\n" for i, c in zip(range(8), "abcabcab"))
    lines = text.splitlines()
    lines[5] = f"{cell},a,0"
    src = write_csv(in_tmp / "bad.csv", "\n".join(lines) + "\n")
    with pytest.raises(PipelineInputError) as err:
        ingest_stage("t", dataset(src))
    assert message in str(err.value) and src in str(err.value)
    assert not WHERE.raw_dir.exists()


def write_csv(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_an_all_missing_column_and_a_one_class_label_are_refused(in_tmp):
    src = write_csv(in_tmp / "gap.csv", "a,empty,label\n1,,x\n2,,y\n3,,x\n")
    with pytest.raises(PipelineInputError, match=r"gap.csv: column 'empty' is entirely missing"):
        ingest_stage("t", dataset(src))
    assert ingest_stage("t", dataset(src, ingest={"columns": {"empty": "drop"}}))["rows"] == 3
    src = write_csv(in_tmp / "one.csv", "a,b,label\n1,p,x\n2,q,\n3,p,x\n4,q,\n")
    with pytest.raises(PipelineInputError, match=r"one.csv: label 'label' has a single class"):
        ingest_stage("t", dataset(src))


def test_missing_error_and_drop_keep_their_meaning(in_tmp):
    src = write(messy_table(100), in_tmp / "messy.csv")
    with pytest.raises(
        PipelineInputError, match=r"row 1, column 'color': missing value|row \d+, column '\w+': missing"
    ):
        ingest_stage("t", dataset(src, ingest={"missing": "error"}))
    info = ingest_stage("t", dataset(src, ingest={"missing": "drop"}))
    assert info["rows_dropped"] > 3 and info["missing"] == dict.fromkeys(info["column_types"], 0)


def test_the_penguins_ship_offline_with_categories_and_gaps(in_tmp):
    info, meta = ingest_and_prepare("palmerpenguins:penguins", label="species")
    assert info["task"] == "multiclass" and meta["classes"] == ["Adelie", "Chinstrap", "Gentoo"]
    assert info["column_types"]["island"] == "category" and info["column_types"]["sex"] == "binary"
    assert info["rows_dropped"] == 0 and info["missing"]["sex"] == 11 and info["rows"] == 344


# ------------------------------------------------------------------ learning from it


def test_the_categorical_signal_is_learned(in_tmp):
    _, meta = ingest_and_prepare(write(messy_table(), in_tmp / "messy.csv"))
    net = fit_fnn(meta, "binary", "bce")
    logits, y = outputs(net, "test")
    accuracy = float(((logits.reshape(-1) > 0).astype(int) == y).mean())
    majority = float(np.bincount(y).max() / len(y))
    assert accuracy >= 0.85 and accuracy > majority + 0.25, (accuracy, majority)


def test_a_high_cardinality_category_is_learned_through_its_embedding(in_tmp):
    rng = np.random.default_rng(1)
    shops = [f"shop{i:02d}" for i in range(60)]
    shop = rng.choice(shops, 1500)
    label = np.where(np.isin(shop, shops[::2]), "yes", "no")  # even shops say yes: only the shop tells
    src = write(pd.DataFrame({"shop": shop, "noise": rng.normal(size=1500), "label": label}), in_tmp / "shops.csv")
    _, meta = ingest_and_prepare(src, prepare={"max_onehot": 10})
    assert meta["embeddings"] == [[61, 16]]
    net = fit_fnn(meta, "binary", "bce", epochs=300)
    assert len(net.embeds) == 1
    logits, y = outputs(net, "test")
    assert float(((logits.reshape(-1) > 0).astype(int) == y).mean()) >= 0.9


def r2(pred: np.ndarray, true: np.ndarray) -> float:
    return 1 - float(((pred - true) ** 2).sum() / ((true - true.mean()) ** 2).sum())


def thousands_table(n: int = 500) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    area = rng.uniform(30, 200, n)
    rooms = rng.integers(1, 6, n)
    district = rng.choice(["north", "south", "east"], n)
    price = 2000 + 25 * area + 300 * rooms + np.where(district == "north", 1500, 0) + rng.normal(0, 150, n)
    frame = pd.DataFrame({"area": area, "rooms": rooms, "district": district, "price": price})
    frame.loc[rng.choice(n, 30, replace=False), "area"] = np.nan
    return frame


@pytest.mark.parametrize("source", ["sklearn:diabetes", "thousands"])
def test_regression_targets_are_scaled_and_the_fnn_matches_ridge(in_tmp, source):
    from sklearn.linear_model import Ridge

    from pipelines.evaluation.baselines import table_baselines

    label = "target"
    if source == "thousands":
        source, label = write(thousands_table(), in_tmp / "prices.csv"), "price"
    _, meta = ingest_and_prepare(source, label=label)
    prep = preprocessor_from_state(meta["preprocessing"])
    y_train = load_split("t", "train")[1]
    assert abs(y_train.mean()) < 1e-5 and abs(y_train.std() - 1) < 1e-3  # standardized on train
    net = fit_fnn(meta, "regression", "mse", epochs=200, hidden=(32,))
    pred, y = outputs(net, "test")
    true = prep.inverse(y.reshape(-1))
    x_train, x_test = load_split("t", "train")[0], load_split("t", "test")[0]
    ridge = Ridge().fit(x_train, y_train.reshape(-1))
    ridge_r2 = r2(prep.inverse(ridge.predict(x_test)), true)
    fnn_r2 = r2(prep.inverse(pred.reshape(-1)), true)
    assert fnn_r2 >= ridge_r2 - 0.05, (fnn_r2, ridge_r2)
    # The ridge baseline evaluate writes to metrics.json is this one: same features, split and units.
    splits = {split: load_split("t", split) for split in ("train", "val", "test")}
    reported = table_baselines("t", {**meta, "task": "regression"}, splits)["ridge"]["test/r2"]
    assert reported == pytest.approx(ridge_r2, abs=1e-4)
    if label == "price":
        assert true.min() > 1000 and ridge_r2 > 0.9  # restored to the data's units


def test_log_target_scaling_round_trips(in_tmp):
    src = write(thousands_table(), in_tmp / "prices.csv")
    _, meta = ingest_and_prepare(src, label="price", prepare={"target_scaling": "log"})
    prep = preprocessor_from_state(meta["preprocessing"])
    table = pd.read_parquet(WHERE.raw_dir / "table.parquet")
    test_rows = shuffled_split(len(table), dataset("x").prepare)["test"]
    y = load_split("t", "test")[1].reshape(-1)
    np.testing.assert_allclose(prep.inverse(y), table["price"].to_numpy()[test_rows], rtol=1e-5)


def test_regression_plots_are_in_the_labels_units(in_tmp):
    from pipelines.stages.evaluate import _regression_plot

    _, meta = ingest_and_prepare(write(thousands_table(), in_tmp / "prices.csv"), label="price")
    y = load_split("t", "test")[1]
    for sub in ("predictions", "plots"):
        (in_tmp / sub).mkdir()
    restored = preprocessor_from_state(meta["preprocessing"]).inverse(y.reshape(-1))
    _regression_plot(meta, "c", restored, None, y, in_tmp, {})
    plotted = pd.read_csv(in_tmp / "predictions" / "c.csv")
    assert plotted["actual"].min() > 1000
    np.testing.assert_allclose(plotted["actual"], plotted["predicted"])
