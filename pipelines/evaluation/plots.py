"""PNG plots (DVC's HTML plots load JavaScript from a CDN and stay blank offline)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


def learning_curves(histories: dict[str, pd.DataFrame], out: Path, title: str = "") -> None:
    metrics = ["train/loss", "val/loss"] + sorted(
        {c for h in histories.values() for c in h.columns if c.startswith("val/") and c != "val/loss"}
    )
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for name, hist in histories.items():
            if metric in hist:
                ax.plot(hist["epoch"] + 1, hist[metric], marker=".", label=name)
        ax.set(title=metric, xlabel="epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def confusion_matrix(cm: list[list[int]], classes: list[str], title: str, out: Path) -> None:
    n = len(classes)
    side = max(4.5, 1.5 + 0.6 * n)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(cm, cmap="Blues")
    peak = max(max(row) for row in cm) or 1
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(cm[i][j]), ha="center", va="center", color="white" if cm[i][j] > peak / 2 else "black")
    ax.set(
        xticks=range(n),
        yticks=range(n),
        xticklabels=classes,
        yticklabels=classes,
        xlabel="predicted",
        ylabel="actual",
        title=title,
    )
    plt.setp(ax.get_xticklabels(), rotation=45, ha="right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def predicted_vs_true(actual, predicted, title: str, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(actual, predicted, s=10, alpha=0.6)
    lo, hi = float(min(actual.min(), predicted.min())), float(max(actual.max(), predicted.max()))
    ax.plot([lo, hi], [lo, hi], color="grey", linestyle="--", label="perfect")
    ax.set(xlabel="true", ylabel="predicted", title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _finish(fig, ax, out: Path) -> None:
    """A light grid and the legend, then the PNG written and the figure closed (figures pile up otherwise)."""
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def forecast(frame: pd.DataFrame, title: str, out: Path) -> None:
    """Forecast against actual over the test steps, with the naive last-value baseline."""
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(frame["step"], frame["actual"], color="black", label="actual")
    ax.plot(frame["step"], frame["predicted"], marker=".", label="forecast")
    ax.plot(frame["step"], frame["naive_last"], linestyle=":", color="grey", label="naive last value")
    ax.set(xlabel="test step", ylabel="value", title=title)
    _finish(fig, ax, out)


def horizon_forecast(history, frame: pd.DataFrame, title: str, out: Path) -> None:
    """The window before the last test origin, then the forecast of the horizon against the actual values."""
    x = frame["timestamp"] if "timestamp" in frame else frame["step"]
    past = range(int(frame["step"].iloc[0]) - len(history), int(frame["step"].iloc[0]))
    if "timestamp" in frame:
        freq = pd.infer_freq(frame["timestamp"]) if len(frame) >= 3 else None
        past = pd.date_range(end=frame["timestamp"].iloc[0], periods=len(history) + 1, freq=freq)[:-1] if freq else None
    fig, ax = plt.subplots(figsize=(10, 4))
    if past is not None:
        ax.plot(past, history, color="grey", label="window (input)")
    ax.plot(x, frame["actual"], color="black", marker=".", label="actual")
    ax.plot(x, frame["predicted"], marker=".", label="forecast")
    ax.plot(x, frame["seasonal_naive"], linestyle="--", color="tab:green", label="seasonal naive")
    ax.plot(x, frame["naive_last"], linestyle=":", color="grey", label="naive last value")
    ax.set(xlabel="time" if "timestamp" in frame else "step", ylabel="value", title=title)
    _finish(fig, ax, out)


def per_step(errors: dict[str, list[float]], title: str, out: Path) -> None:
    """An error metric per forecast step, one line per forecaster."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, values in errors.items():
        ax.plot(range(1, len(values) + 1), values, marker=".", label=name)
    ax.set(xlabel="forecast step", ylabel="RMSE", title=title)
    _finish(fig, ax, out)
