"""Every reported metric agrees with an independent computation (scikit-learn / NumPy) on the same predictions."""

import math

import numpy as np
import pytest
import torch
from sklearn import metrics as sk

from pipelines.evaluation.metrics import confusion_matrix, unigram_perplexity
from pipelines.evaluation.scoring import score

rng = np.random.default_rng(0)


def test_classification_metrics_match_sklearn():
    classes = ["a", "b", "c", "d"]
    y = rng.integers(0, 4, 500)
    logits = torch.from_numpy(rng.normal(size=(500, 4)) + np.eye(4)[y] * 1.5)
    scores, pred = score({"task": "multiclass", "classes": classes}, logits, "cce", None, y)
    np.testing.assert_array_equal(pred, logits.argmax(1).numpy())
    assert scores["accuracy"] == pytest.approx(sk.accuracy_score(y, pred))
    for ours, theirs in (
        ("precision", sk.precision_score),
        ("recall", sk.recall_score),
        ("f1", sk.f1_score),
        ("iou", sk.jaccard_score),
    ):
        assert scores[f"{ours}_macro"] == pytest.approx(theirs(y, pred, average="macro"), abs=1e-6), ours
        per_class = theirs(y, pred, average=None)
        assert [scores[f"{ours}_per_class"][c] for c in classes] == pytest.approx(per_class, abs=1e-6), ours
    cm = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(y), 4)
    np.testing.assert_array_equal(cm, sk.confusion_matrix(y, pred))
    assert scores["balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(y, pred), abs=1e-9)


def test_balanced_accuracy_counts_only_the_classes_a_split_holds():
    # Class "c" is predicted but absent from the labels: scikit-learn leaves it out (recall_macro counts it as 0).
    y, pred = np.array([0, 0, 0, 0, 1]), np.array([0, 0, 2, 0, 1])
    scores, _ = score({"task": "multiclass", "classes": ["a", "b", "c"]}, torch.eye(3)[pred], "cce", None, y)
    with pytest.warns(UserWarning, match="y_pred contains classes not in y_true"):
        assert scores["balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(y, pred))


def test_every_metric_a_task_names_for_its_primary_metric_is_one_the_scorer_reports():
    # evaluate.primary_metric is checked against models.task_kinds when params are read (no torch there):
    # each task's list must be what pipelines/evaluation/metrics.py really reports, with its direction.
    from models.task_kinds import TASKS

    y = rng.integers(0, 3, 40)
    outputs = {
        "binary": ({"classes": ["n", "y"]}, torch.randn(40, 1), "bce", None, y % 2),
        "multiclass": ({"classes": ["a", "b", "c"]}, torch.randn(40, 3), "cce", None, y),
        "regression": ({}, torch.randn(40, 1), "mse", None, rng.normal(size=(40, 1))),
        "forecast": (
            {"window": 8, "season_length": 4, "mase_scale": 1.0},
            torch.randn(40, 1),
            "mse",
            rng.normal(size=(40, 8)),
            rng.normal(size=(40, 1)),
        ),
        "next_word": ({}, torch.randn(40, 10), "cce", None, y),
    }
    assert set(outputs) == set(TASKS)
    for task, (meta, *rest) in outputs.items():
        scores, _ = score({"task": task, **meta}, *rest)
        assert set(TASKS[task].metrics) <= {k for k, v in scores.items() if isinstance(v, float)}, task
        assert TASKS[task].primary_metric in TASKS[task].metrics and TASKS[task].metric_mode("r2") in (None, "max")


def test_binary_with_one_logit_matches_sklearn():
    y = rng.integers(0, 2, 300)
    logits = torch.from_numpy(rng.normal(size=(300, 1)) + (y[:, None] - 0.5) * 2)
    scores, pred = score({"task": "binary", "classes": ["no", "yes"]}, logits, "bce", None, y)
    np.testing.assert_array_equal(pred, (torch.sigmoid(logits[:, 0]) >= 0.5).long().numpy())
    assert scores["accuracy"] == pytest.approx(sk.accuracy_score(y, pred))
    assert scores["f1_per_class"]["yes"] == pytest.approx(sk.f1_score(y, pred), abs=1e-6)


def test_regression_metrics_match_sklearn():
    y = rng.normal(size=(400, 1)).astype(np.float32)
    out = torch.from_numpy(y + rng.normal(scale=0.3, size=(400, 1)).astype(np.float32))
    scores, pred = score({"task": "regression"}, out, "mse", None, y)
    assert scores["mse"] == pytest.approx(sk.mean_squared_error(y, pred), rel=1e-5)
    assert scores["rmse"] == pytest.approx(math.sqrt(sk.mean_squared_error(y, pred)), rel=1e-5)
    assert scores["mae"] == pytest.approx(sk.mean_absolute_error(y, pred), rel=1e-5)
    assert scores["r2"] == pytest.approx(sk.r2_score(y, pred), rel=1e-5)


def test_forecast_metrics_and_baselines_match_numpy_in_the_series_units():
    meta = {"task": "forecast", "window": 8, "season_length": 4, "normalization": {"mean": 100.0, "std": 20.0}}
    x = rng.normal(size=(60, 8)).astype(np.float32)
    y = rng.normal(size=(60, 1)).astype(np.float32)
    out = torch.from_numpy(y + rng.normal(scale=0.2, size=(60, 1)).astype(np.float32))
    scores, pred = score(meta, out, "mse", x, y)
    true = y[:, 0] * 20 + 100
    np.testing.assert_allclose(pred, out.numpy()[:, 0] * 20 + 100, rtol=1e-6)
    rmse = lambda a: float(np.sqrt(np.mean((a - true) ** 2)))  # noqa: E731
    assert scores["rmse"] == pytest.approx(rmse(pred), rel=1e-6)
    assert scores["mae"] == pytest.approx(float(np.mean(np.abs(pred - true))), rel=1e-6)
    assert scores["naive_last_rmse"] == pytest.approx(rmse(x[:, -1] * 20 + 100), rel=1e-6)
    # Seasonal naive: the value one season (4 steps) before the target, i.e. window position 8 - 4.
    assert scores["seasonal_naive_rmse"] == pytest.approx(rmse(x[:, 4] * 20 + 100), rel=1e-6)
    assert scores["seasonal_naive_mae"] == pytest.approx(float(np.mean(np.abs(x[:, 4] * 20 + 100 - true))), rel=1e-6)


def test_next_word_perplexity_and_top_k_match_numpy():
    vocab = 30
    y = rng.integers(0, vocab, 200)
    logits = rng.normal(size=(200, vocab)) * 2
    scores, pred = score({"task": "next_word"}, torch.from_numpy(logits), "cce", None, y)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    assert scores["perplexity"] == pytest.approx(math.exp(-log_probs[np.arange(200), y].mean()), rel=1e-6)
    assert scores["accuracy"] == pytest.approx(float(np.mean(logits.argmax(1) == y)))
    top5 = np.argsort(-logits, axis=1)[:, :5]
    assert scores["top5_accuracy"] == pytest.approx(float(np.mean([t in row for t, row in zip(y, top5)])))
    assert scores["top5_accuracy"] == pytest.approx(sk.top_k_accuracy_score(y, logits, k=5, labels=np.arange(vocab)))


def test_unigram_baseline_matches_numpy():
    train = rng.integers(0, 10, 1000)
    test = rng.integers(0, 10, 300)
    counts = np.bincount(train, minlength=12) + 1.0
    expected = math.exp(-np.log(counts / counts.sum())[test].mean())
    assert unigram_perplexity(torch.from_numpy(train), torch.from_numpy(test), 12) == pytest.approx(expected, rel=1e-9)
