"""A registry entry written before the typed hand-offs (no schema_version, `normalization` in the
checkpoint's data meta) still loads, predicts, completes, renders and takes part in promotion."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from pipelines import predict
from pipelines.handoffs import SCHEMA_VERSION, CandidateInfo, ModelCard, PreparedMeta
from pipelines.registry.card import render_markdown, render_text
from pipelines.registry.local import LocalModelRegistry

OLD_FORMAT = "dl-pipeline-checkpoint/1"


def old_card(dataset: str, task: str, primary: str, mode: str, value: float) -> dict:
    """A card exactly as stages/register.py wrote it before schema_version existed."""
    return {
        "created_at": "2026-01-01T00:00:00+00:00",
        "dataset": dataset,
        "candidate": "c",
        "family": "fnn",
        "task": task,
        "primary_metric": primary,
        "mode": mode,
        "metrics": {"val": {primary: value}, "test": {primary: value, "mae": 0.5}},
        "baselines": {},
        "candidates_compared": ["c"],
        "params": {},
        "plots": [],
        "lineage": {"git": {"commit": "a" * 40, "dirty": False}, "data": {"source": "old.csv"}, "packages": {}},
    }


def save_old_checkpoint(path, net: torch.nn.Module, spec: dict, task: str, loss: str, classes, data_meta) -> None:
    """The blob stages/train.py saved before the typed CandidateInfo (flat keys, data_meta with normalization)."""
    info = {
        "candidate": "c",
        "dataset": data_meta["dataset"],
        "model_spec": spec,
        "optim": {"optimizer": "adam", "lr": 0.01},
        "task": task,
        "loss": loss,
        "n_classes": len(classes) if classes else data_meta.get("vocab_size"),
        "classes": classes,
        "best_epoch": 3,
        "val_metrics": {"val/loss": 0.5, "epoch": 3.0},
        "data_meta": data_meta,
    }
    torch.save({"format": OLD_FORMAT, "state_dict": net.state_dict(), **info}, path)


def register_old(tmp_path, name: str, spec: dict, task: str, loss: str, classes, meta: dict, card: dict):
    import models

    torch.manual_seed(0)
    net = models.create_model(spec["family"], **{k: v for k, v in spec.items() if k != "family"})
    save_old_checkpoint(tmp_path / f"{name}.pt", net, spec, task, loss, classes, meta)
    registry = LocalModelRegistry(tmp_path / "registry")
    version = registry.register(name, tmp_path / f"{name}.pt", card)
    return registry, version, net


TABLE_META = {
    "dataset": "old-table",
    "modality": "table",
    "task": "binary",
    "features": ["a", "b", "c"],
    "in_features": 3,
    "input_shape": [3],
    "label": "y",
    "classes": ["no", "yes"],
    "normalization": {"mean": [1.0, 2.0, 3.0], "std": [0.5, 2.0, 4.0]},
    "sizes": {"train": 10, "val": 2, "test": 2},
    "seed": 0,
    "class_counts_train": [5, 5],
}


def test_an_old_table_checkpoint_and_card_predict_and_render(tmp_path):
    spec = {"family": "fnn", "input_shape": [3], "out_features": 1, "activation": "relu", "dropout": 0.0, "hidden": [4]}
    card = old_card("old-table", "binary", "accuracy", "max", 0.75)
    registry, version, net = register_old(tmp_path, "old-table", spec, "binary", "bce", ["no", "yes"], TABLE_META, card)
    rows = pd.DataFrame({"a": [0.0, 1.0, 2.0], "b": [5.0, -1.0, 2.0], "c": [3.0, 9.0, -2.0], "y": ["no", "yes", "no"]})
    rows.to_csv(tmp_path / "rows.csv", index=False)

    out = predict.predict_file(
        "old-table", str(tmp_path / "rows.csv"), tmp_path / "out.csv", str(tmp_path / "registry")
    )
    scaled = (rows[["a", "b", "c"]].to_numpy(np.float32) - np.float32([1, 2, 3])) / np.float32([0.5, 2, 4])
    with torch.no_grad():
        p_yes = torch.sigmoid(net(torch.from_numpy(scaled.astype(np.float32))).view(-1)).numpy()
    assert list(out["prediction"]) == [("yes" if p >= 0.5 else "no") for p in p_yes]
    np.testing.assert_allclose(out["p_yes"], p_yes, rtol=1e-6)

    # The info upgrades: the old normalization is now the table's preprocessing state.
    _, info, loaded_card = predict.load_registered("old-table:1", str(tmp_path / "registry"))
    assert info.data_meta.preprocessing.kind == "table" and info.data_meta.preprocessing.std == [0.5, 2.0, 4.0]
    assert info.schema_version == SCHEMA_VERSION and info.val_metrics["val/loss"] == 0.5
    assert "schema_version" not in loaded_card  # the stored card is returned as it was written
    assert ModelCard.model_validate(loaded_card).metric("test/accuracy") == 0.75

    text = render_text(loaded_card, {"production": 1}, str(tmp_path / "registry"))
    assert "old-table v1  (aliases: production)" in text and "accuracy=0.7500" in text and "a" * 40 in text
    page = render_markdown(loaded_card, {}, tmp_path / "registry", "file:///x/model.pt")
    assert "# old-table v1" in page and "| accuracy | 0.7500 |" in page

    # A new card is compared with the old one on the same test metric.
    registry.promote("old-table", 1, "production")
    newer = registry.register(
        "old-table", tmp_path / "old-table.pt", old_card("old-table", "binary", "accuracy", "max", 0.8)
    )
    assert registry.promote("old-table", newer.version, "production").promoted


def test_an_old_series_checkpoint_forecasts_in_the_series_units(tmp_path):
    meta = {
        "dataset": "old-series",
        "modality": "series",
        "task": "forecast",
        "input_shape": [4],
        "window": 4,
        "season_length": 2,
        "normalization": {"mean": 10.0, "std": 3.0},
        "classes": None,
        "sizes": {"train": 10, "val": 2, "test": 2},
        "seed": 0,
    }
    spec = {"family": "fnn", "input_shape": [4], "out_features": 1, "activation": "tanh", "dropout": 0.0, "hidden": [3]}
    card = old_card("old-series", "forecast", "rmse", "min", 2.0)
    _, _, net = register_old(tmp_path, "old-series", spec, "forecast", "mse", None, meta, card)
    values = np.arange(7, dtype=np.float32) * 2 + 5
    pd.DataFrame({"value": values}).to_csv(tmp_path / "s.csv", index=False)

    out = predict.predict_file("old-series", str(tmp_path / "s.csv"), tmp_path / "f.csv", str(tmp_path / "registry"))
    windows = np.lib.stride_tricks.sliding_window_view((values - 10.0) / 3.0, 4).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(np.ascontiguousarray(windows))).view(-1).numpy() * 3.0 + 10.0
    np.testing.assert_allclose(out["prediction"], expected, rtol=1e-6)
    assert list(out["forecast_for_step"]) == [4, 5, 6, 7] and np.isnan(out["actual"].iloc[-1])


def test_an_old_language_model_completes_a_sentence(tmp_path):
    vocab = ["<unk>", "the", "cat", "sat", "on", "mat", "."]
    meta = {
        "dataset": "old-text",
        "modality": "text",
        "task": "next_word",
        "input_shape": [3],
        "vocab": vocab,
        "vocab_size": len(vocab),
        "unk_id": 0,
        "context_length": 3,
        "tokens": {"train": 50, "val": 5, "test": 5},
        "classes": None,
        "sizes": {"train": 47, "val": 2, "test": 2},
        "seed": 0,
    }
    spec = {
        "family": "lstm",
        "input_shape": [3],
        "out_features": len(vocab),
        "activation": "tanh",
        "dropout": 0.0,
        "hidden_size": 8,
        "num_layers": 1,
        "embedding_dim": 4,
        "vocab_size": len(vocab),
    }
    card = old_card("old-text", "next_word", "perplexity", "min", 5.0)
    register_old(tmp_path, "old-text", spec, "next_word", "cce", None, meta, card)
    line = predict.complete("old-text", "the cat zebra", 4, str(tmp_path / "registry"))
    words = line.split()
    assert words[:3] == ["the", "cat", "zebra"] and len(words) == 7 and set(words[3:]) <= set(vocab[1:])
    (tmp_path / "p.txt").write_text("the cat\nsat on the mat\n")
    out = predict.predict_file("old-text", str(tmp_path / "p.txt"), tmp_path / "n.csv", str(tmp_path / "registry"))
    assert list(out["prompt"]) == ["the cat", "sat on the mat"] and set(out["prediction"]) <= set(vocab)


def test_old_meta_and_info_files_upgrade_and_bad_ones_name_the_field():
    meta = PreparedMeta.model_validate(TABLE_META)
    assert meta.preprocessing.mean == [1.0, 2.0, 3.0] and "normalization" not in meta.dump()
    image = PreparedMeta.model_validate(
        {
            **TABLE_META,
            "modality": "image",
            "input_shape": [1, 2, 2],
            "normalization": {"mean": [0.5], "std": [2.0], "per": "channel"},
        }
    )
    assert image.preprocessing.kind == "image" and image.preprocessing.input_shape == [1, 2, 2]
    info = CandidateInfo.model_validate(
        {
            "candidate": "c",
            "dataset": "d",
            "model_spec": {},
            "task": "binary",
            "loss": "bce",
            "val_metrics": {"val_loss": 0.3, "val_accuracy": 0.9},
            "data_meta": TABLE_META,
        }
    )
    assert info.val_metrics == {"val/loss": 0.3, "val/accuracy": 0.9}
    with pytest.raises(ValueError, match="sizes"):
        PreparedMeta.model_validate({k: v for k, v in TABLE_META.items() if k != "sizes"})
    assert json.loads(json.dumps(meta.dump()))["preprocessing"]["kind"] == "table"  # plain JSON, no pickle


# -- metric keys: nested per split and `best.test_<metric>` (schema_version 2 and before) -> `split/metric`


def old_report(version: int | None) -> dict:
    """metrics.json as evaluate wrote it before schema_version 3 (`version` None: before schema_version)."""
    report = {
        "dataset": "old",
        "task": "binary",
        "primary_metric": "accuracy",
        "mode": "max",
        "candidates": {
            "a": {
                "val": {"accuracy": 0.7, "loss": 0.6},
                "test": {"accuracy": 0.8, "confusion_matrix": [[1, 0], [0, 1]]},
            },
            "b": {"val": {"accuracy": 0.6}, "test": {"accuracy": 0.75}},
        },
        "best_candidate": "a",
        "best": {"candidate": "a", "test_accuracy": 0.8},
    }
    return report | ({"schema_version": version} if version else {})


@pytest.mark.parametrize("version", [None, 2])
def test_an_old_metrics_json_reads_with_split_metric_keys(tmp_path, version):
    from pipelines.handoffs import EvaluationReport
    from pipelines.orchestration import artifacts

    report = EvaluationReport.model_validate(old_report(version))
    assert report.candidates["a"] == {
        "val/accuracy": 0.7,
        "val/loss": 0.6,
        "test/accuracy": 0.8,
        "test/confusion_matrix": [[1, 0], [0, 1]],
    }
    assert report.best == {"candidate": "a", "test/accuracy": 0.8} and report.metric("b", "test/accuracy") == 0.75
    assert report.model_dump()["schema_version"] == SCHEMA_VERSION  # rewritten in today's shape

    (tmp_path / "data/evaluate/old").mkdir(parents=True)
    (tmp_path / "data/evaluate/old/metrics.json").write_text(json.dumps(old_report(version)))
    rows = artifacts.metrics_rows(tmp_path, "old")
    assert rows[0] == {"candidate": "a", "family": "", "best": "yes", "val/accuracy": 0.7, "test/accuracy": 0.8}


def test_experiments_from_before_and_after_the_change_compare_on_one_column():
    from pipelines.orchestration.experiments import metric_columns, parse_show

    path = "data/evaluate/old/metrics.json"
    new = old_report(SCHEMA_VERSION) | {
        "candidates": {"a": {"val/accuracy": 0.72, "test/accuracy": 0.82}},
        "best": {"candidate": "a", "test/accuracy": 0.82},
    }
    show = [
        {
            "rev": "a" * 40,
            "name": "main",
            "data": {"params": {}, "metrics": {path: {"data": old_report(2)}}},
            "experiments": [
                {
                    "name": "exp-new",
                    "executor": None,
                    "revs": [{"rev": "b" * 40, "data": {"metrics": {path: {"data": new}}}}],
                }
            ],
        }
    ]
    rows = parse_show(show)
    assert [row.metrics[path]["best.test/accuracy"] for row in rows] == [0.8, 0.82]
    assert rows[0].metrics[path]["candidates.a.val/accuracy"] == 0.7
    assert metric_columns(rows, None) == [(path, "best.test/accuracy")]
    assert metric_columns(rows, "best.test_accuracy") == [(path, "best.test/accuracy")]  # the old spelling asked for


@pytest.mark.parametrize("old_is_current", [True, False])
def test_an_old_card_and_a_new_card_compare_for_promotion(old_is_current):
    from pipelines.registry.card import primary_text
    from pipelines.registry.promotion import decide_promotion

    old = old_card("d", "regression", "rmse", "min", 2.0)  # metrics nested per split
    new = {**old, "schema_version": SCHEMA_VERSION, "metrics": {"val/rmse": 1.6, "test/rmse": 1.5}}
    assert primary_text(old) == "rmse=2.0000" and primary_text(new) == "rmse=1.5000"
    if old_is_current:  # the new version (lower rmse) takes the alias from the old one
        decision = decide_promotion("m", "production", 2, new, 1, old)
        assert decision.promoted and (decision.value, decision.previous_value) == (1.5, 2.0)
    else:  # an old card registered after a new one (a late re-register) is still compared, and loses
        decision = decide_promotion("m", "production", 2, old, 1, new)
        assert not decision.promoted and (decision.value, decision.previous_value) == (2.0, 1.5)


# -- baselines: one float each (schema_version 3 and before) -> {name: {split/metric: value}}


def test_an_old_report_and_card_with_a_float_unigram_baseline_still_load_and_render(tmp_path):
    from pipelines.evaluation.comparison import comparison_table
    from pipelines.handoffs import EvaluationReport
    from pipelines.orchestration import artifacts

    old = {
        "schema_version": 3,
        "dataset": "text",
        "task": "next_word",
        "primary_metric": "perplexity",
        "mode": "min",
        "candidates": {"lstm": {"val/perplexity": 90.0, "test/perplexity": 95.0}},
        "baselines": {"unigram_perplexity": 400.0},
        "best_candidate": "lstm",
        "best": {"candidate": "lstm", "test/perplexity": 95.0},
    }
    report = EvaluationReport.model_validate(old).model_dump()
    assert report["baselines"] == {"unigram": {"test/perplexity": 400.0}}
    assert report["schema_version"] == SCHEMA_VERSION and report["failed_candidates"] == {}
    assert "| baseline: unigram | 400.0000 |" in comparison_table(report)

    (tmp_path / "data/evaluate/text").mkdir(parents=True)
    (tmp_path / "data/evaluate/text/metrics.json").write_text(json.dumps(old))
    rows = artifacts.metrics_rows(tmp_path, "text")
    assert rows[-1] == {"candidate": "unigram", "family": "baseline", "best": ""} | {
        "val/perplexity": None,
        "test/perplexity": 400.0,
    }
    assert artifacts.verdict(tmp_path, "text") == ""  # the LSTM beats it

    card = old_card("text", "next_word", "perplexity", "min", 95.0) | {"baselines": {"unigram_perplexity": 400.0}}
    assert ModelCard.model_validate(card).baselines == {"unigram": {"test/perplexity": 400.0}}
    page = render_markdown(card, {}, tmp_path / "registry", "file:///x/model.pt")
    assert "| baseline unigram: perplexity | 400.0000 |" in page
    text = render_text(card | {"name": "text-lstm", "version": 1}, {}, str(tmp_path / "registry"))
    assert "baselines (test)\n  unigram" in text and "perplexity=400.0000" in text
