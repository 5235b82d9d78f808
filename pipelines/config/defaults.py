"""The default datasets: one per model family, all shipped offline with a package.

The main job trains every one of them; each is also a ready-made experiment
(`dvc exp run register@digits`, or pick it in the Prefect form).
"""

from __future__ import annotations

from typing import Any

DEFAULT_DATASETS: dict[str, dict[str, Any]] = {
    # ReLU vs Sigmoid on a small table (binary): one learning-curve plot, one metrics table.
    "tabular": {
        "modality": "table",
        "ingest": {"source": "sklearn:breast_cancer", "label": "target", "missing": "error"},
        "train": {
            "epochs": 30,
            "batch_size": 64,
            "candidates": {
                "fnn-relu": {"family": "fnn", "hidden": [64, 32], "activation": "relu"},
                "fnn-sigmoid": {"family": "fnn", "hidden": [64, 32], "activation": "sigmoid", "lr": 0.003},
            },
        },
        "register": {"model_name": "tabular-fnn"},
    },
    # A CNN for MNIST-style digits (scikit-learn's 8x8 handwritten digits).
    "digits": {
        "modality": "image",
        "ingest": {"source": "sklearn:digits"},
        "train": {
            "epochs": 25,
            "batch_size": 64,
            "candidates": {
                "cnn-narrow": {"family": "cnn", "filters": [8, 16], "dense": [32]},
                "cnn-wide": {"family": "cnn", "filters": [32, 64], "dense": [64]},
            },
        },
        "register": {"model_name": "digits-cnn"},
    },
    # Next-word prediction on a real English text that ships with Python (its docs' topics).
    "text": {
        "modality": "text",
        "ingest": {"source": "python:pydoc-topics"},
        "prepare": {"context_length": 8, "max_vocab": 2000, "min_count": 2, "max_tokens": 60000},
        "train": {
            "epochs": 5,
            "batch_size": 128,
            "early_stopping": {"patience": 2},
            "candidates": {
                "lstm": {"family": "lstm", "embedding_dim": 48, "hidden_size": 96, "lr": 0.003, "dropout": 0.1},
                "gru": {"family": "gru", "embedding_dim": 48, "hidden_size": 96, "lr": 0.003, "dropout": 0.1},
            },
        },
        "register": {"model_name": "text-next-word"},
    },
    # Forecasting yearly sunspot numbers (statsmodels' dataset): 30 years predict the next.
    "series": {
        "modality": "series",
        "ingest": {"source": "statsmodels:sunspots", "missing": "interpolate"},
        "prepare": {"window": 30, "season_length": 11},
        "train": {
            "epochs": 60,
            "batch_size": 32,
            "early_stopping": {"patience": 10},
            "candidates": {
                "lstm": {"family": "lstm", "hidden_size": 32, "lr": 0.005, "dropout": 0.0},
                "gru": {"family": "gru", "hidden_size": 32, "lr": 0.005, "dropout": 0.0},
            },
        },
        "register": {"model_name": "sunspots-forecast"},
    },
}
