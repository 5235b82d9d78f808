"""ONNX export of registered models: one file with a dynamic batch dimension, its preprocessing as JSON and
the card; raw inputs run through the NumPy reference reader of that JSON and onnxruntime give what
`python -m pipelines.predict` gives through torch, to 1e-5, for every family (FNN with embeddings on a table,
CNN on images, LSTM and GRU on text and on series, relative mode included).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import onnx
import pandas as pd
import pytest
import torch

from pipelines.errors import PipelineInputError
from pipelines.export.onnx import export_onnx
from pipelines.export.reader import ExportInputError
from pipelines.export.runtime import load_onnx_export
from pipelines.modalities import preprocessor_from_state
from pipelines.predict import load_registered, predict_file
from pipelines.registry.errors import RegistryError
from tests.conftest import ROOT
from tests.small_models import REGISTRY, register_small
from tests.test_tables import messy_table

TOL = 1e-5


def torch_logits(ref: str, source: str) -> tuple[np.ndarray, np.ndarray]:
    """(the network's input, its output) on a raw file, the way predict reads it."""
    net, info, _ = load_registered(ref, REGISTRY)
    x, _ = preprocessor_from_state(info.data_meta.preprocessing.model_dump()).read_inputs(source)
    with torch.no_grad():
        return x, net(torch.from_numpy(np.ascontiguousarray(x).copy())).numpy()


def export_and_load(name: str, tmp_path):
    path = export_onnx(f"{name}:1", tmp_path / f"export-{name}", REGISTRY)
    assert sorted(p.name for p in path.parent.iterdir()) == ["card.json", "model.onnx", "preprocessing.json"]
    graph = onnx.load(str(path)).graph  # the weights are inside: loads without any other file
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a named (dynamic) batch dimension
    return load_onnx_export(path.parent)


def assert_parity(model, raw, source: str, ref: str, out_csv) -> pd.DataFrame:
    """Reader + onnxruntime on `raw` == torch through predict's reading of `source`: inputs, logits, outputs."""
    x_torch, logits_torch = torch_logits(ref, source)
    x_onnx = model.inputs(raw)
    np.testing.assert_array_equal(x_onnx, x_torch)  # the JSON preprocessing is predict's, exactly
    logits = model.logits(raw)
    np.testing.assert_allclose(logits, logits_torch, rtol=TOL, atol=TOL)
    frame = predict_file(ref, source, out_csv, REGISTRY)
    point, probs = model.predict(raw)
    if probs is None:  # values in the data's units
        expected = np.stack(frame["prediction"].to_numpy()) if len(np.shape(point)) > 1 else frame["prediction"]
        np.testing.assert_allclose(np.asarray(point, np.float64).reshape(-1)[-len(frame) :], expected, rtol=TOL)
    else:
        assert [str(p) for p in point] == [str(p) for p in frame["prediction"]]
        for j, name in enumerate(model.spec.get("classes") or []):
            np.testing.assert_allclose(probs[:, j], frame[f"p_{name}"], rtol=TOL, atol=TOL)
    return frame


def test_fnn_with_embeddings_on_a_table(in_tmp):
    table = messy_table(300)
    rng = np.random.default_rng(1)
    table["vip"] = rng.choice([True, False], 300)  # pandas reads True/False text as booleans: the levels true/false
    table["floor"] = rng.choice([1.0, 2.0, 3.0], 300)  # a category of numbers: written 2.0, the level '2'
    table.to_csv("train.csv", index=False)
    ingest = {"source": "train.csv", "label": "label", "columns": {"floor": "category"}}
    register_small("messy", "table", ingest, {"family": "fnn", "hidden": [8]}, {"max_onehot": 10})
    rows = table.drop(columns=["label"]).iloc[:40].copy()
    rows.loc[rows.index[0], "color"] = "purple"  # never seen in training: the unknown level
    rows.loc[rows.index[1], "city"] = "atlantis"  # ...of an embedded category
    rows.loc[rows.index[2], ["size", "member", "signup"]] = [np.nan, None, None]  # gaps: filled as in training
    rows.to_csv("rows.csv", index=False)
    model = export_and_load("messy", in_tmp)
    state = model.spec["preprocessing"]
    assert any(c["type"] == "category" and c["embedding"] for c in state["columns"])  # an embedding is exported
    assert {c["type"] for c in state["columns"]} == {"category", "binary", "number", "date"}
    with open("rows.csv", newline="") as f:
        raw = list(csv.DictReader(f))  # every value a string, as a service would receive text
    assert_parity(model, raw, "rows.csv", "messy:1", in_tmp / "p.csv")

    with pytest.raises(ExportInputError, match=r"row 2, column 'size': 'big' is not a number"):
        model.inputs([raw[0], {**raw[1], "size": "big"}])
    with pytest.raises(ExportInputError, match=r"row 1, column 'signup': '03/01/2024' is not an ISO date"):
        model.inputs([{**raw[0], "signup": "03/01/2024"}])


def test_cnn_on_images(in_tmp):
    register_small("digits", "image", {"source": "sklearn:digits"}, {"family": "cnn", "filters": [4], "dense": [8]})
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = digits.images[:30, None].astype(np.float32)  # (30, 1, 8, 8), raw pixel values 0..16
    np.savez("few.npz", x=pixels, y=digits.target[:30])
    model = export_and_load("digits", in_tmp)
    assert_parity(model, pixels, "few.npz", "digits:1", in_tmp / "p.csv")
    with pytest.raises(ExportInputError, match=r"images are \[1, 9, 9\] but the model takes \[1, 8, 8\]"):
        model.inputs(np.zeros((2, 1, 9, 9)))


def corpus(words: int = 1500) -> str:
    rng = np.random.default_rng(0)
    vocab = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "to", "house", "and", "it", "was", "red"]
    return " ".join(rng.choice(vocab, words)) + "."


@pytest.mark.parametrize("family", ["lstm", "gru"])
def test_rnn_on_text(in_tmp, family):
    (in_tmp / "corpus.txt").write_text(corpus())
    candidate = {"family": family, "hidden_size": 8, "embedding_dim": 4, "num_layers": 2}
    prepare = {"context_length": 5, "max_vocab": 12, "min_count": 1}
    register_small("words", "text", {"source": "corpus.txt"}, candidate, prepare)
    prompts = ["the cat sat on the", "A DOG ran, to the house", "zebra", "the mat was red and it"]
    (in_tmp / "prompts.txt").write_text("\n".join(prompts) + "\n")
    model = export_and_load("words", in_tmp)
    assert model.spec["onnx"]["input_dtype"] == "int64"
    assert_parity(model, prompts, "prompts.txt", "words:1", in_tmp / "p.csv")


def series(n: int = 160) -> np.ndarray:
    t = np.arange(n)
    return 50 + 0.3 * t + 10 * np.sin(2 * np.pi * t / 12) + np.random.default_rng(0).normal(0, 1, n)


@pytest.mark.parametrize(("family", "transform", "horizon"), [("lstm", "log", 1), ("gru", "relative", 3)])
def test_rnn_on_series(in_tmp, family, transform, horizon):
    values = series()
    pd.DataFrame({"value": values}).to_csv("train.csv", index=False)
    candidate = {"family": family, "hidden_size": 8}
    prepare = {"window": 12, "season_length": 12, "transform": transform, "horizon": horizon}
    register_small("sales", "series", {"source": "train.csv"}, candidate, prepare)
    recent = values[-40:]
    pd.DataFrame({"value": recent}).to_csv("recent.csv", index=False)
    model = export_and_load("sales", in_tmp)
    assert model.spec["preprocessing"]["transform"] == transform
    frame = assert_parity(model, list(recent), "recent.csv", "sales:1", in_tmp / "p.csv")
    assert len(frame) == (len(recent) - 12 + 1 if horizon == 1 else horizon)


def test_the_cli_exports_atomically_and_refuses_to_overwrite(in_tmp):
    register_small("digits", "image", {"source": "sklearn:digits"}, {"family": "cnn", "filters": [2], "dense": []})

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "pipelines.registry.cli", "export", *args, "--registry", REGISTRY],
            capture_output=True, text=True, timeout=300, cwd=in_tmp,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        )  # fmt: skip

    (in_tmp / "out").mkdir()
    (in_tmp / "out" / "mine.txt").write_text("keep me")
    refused = cli("digits", "out", "--format", "onnx")
    assert refused.returncode == 2 and "out: directory exists and is not empty" in refused.stderr
    assert "--force" in refused.stderr and "Traceback" not in refused.stderr
    assert (in_tmp / "out" / "mine.txt").read_text() == "keep me"  # nothing of the user's was touched

    done = cli("digits:latest", "out", "--format", "onnx", "--force")
    assert done.returncode == 0, done.stderr
    assert "digits v1 -> out/: card.json, model.onnx, preprocessing.json" in done.stdout
    assert sorted(p.name for p in (in_tmp / "out").iterdir()) == ["card.json", "model.onnx", "preprocessing.json"]
    card = json.loads((in_tmp / "out" / "card.json").read_text())
    assert card["name"] == "digits" and card["version"] == 1 and len(card["sha256"]) == 64
    assert not [p for p in in_tmp.iterdir() if p.name.startswith(".out")]  # no temp dir left beside it

    with pytest.raises(RegistryError, match="no version 7"):
        export_onnx("digits:7", in_tmp / "elsewhere", REGISTRY)
    assert not (in_tmp / "elsewhere").exists()
    (in_tmp / "afile").write_text("x")
    with pytest.raises(PipelineInputError, match="afile: exists and is not a directory"):
        export_onnx("digits", in_tmp / "afile", REGISTRY)


def test_the_reference_reader_needs_only_numpy():
    probe = "import sys, pipelines.export.reader\nprint(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    modules = loaded.stdout.split()
    assert not {"torch", "pandas", "onnxruntime", "pydantic"} & {m.split(".")[0] for m in modules}
    assert [m for m in modules if m.startswith("pipelines")] == [
        "pipelines",
        "pipelines.export",
        "pipelines.export.reader",
    ]
