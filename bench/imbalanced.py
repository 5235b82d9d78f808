"""Imbalanced labels: class weights (none vs balanced) and the primary metric, through the real stages.

A generated churn-like table (scikit-learn's make_classification, 7 % positives, overlapping classes, so
nothing here is downloaded), or a table that ships with scikit-learn cut down to a rare class: the real
ingest, prepare, train and evaluate stages run in a temporary directory, with two FNN candidates that differ
only in `class_weights`. Evaluate then runs once per primary metric; each run's best candidate is printed
beside the classical baselines, unweighted and balanced (docs/imbalanced.md holds a run's numbers).

    python -m bench.imbalanced [--rows 4000] [--epochs 30] [--seed 0] [--table generated|breast_cancer]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

PRIMARY_METRICS = ("accuracy", "balanced_accuracy", "f1_macro")
SHOWN = ("accuracy", "balanced_accuracy", "f1_macro", "recall_macro")
FNN = {"family": "fnn", "hidden": [32, 16], "dropout": 0.1}
CANDIDATES = {"plain": {**FNN, "class_weights": "none"}, "balanced": {**FNN, "class_weights": "balanced"}}


def generated_table(rows: int = 4000, seed: int = 0, rare: float = 0.07) -> pd.DataFrame:
    """A churn-like table: 10 numeric features, `churned` yes for `rare` of the rows, classes that overlap."""
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=rows,
        n_features=10,
        n_informative=4,
        n_redundant=2,
        weights=[1 - rare],
        class_sep=0.7,
        flip_y=0.02,
        random_state=seed,
    )
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
    frame["churned"] = np.where(y == 1, "yes", "no")
    return frame


def rare_breast_cancer(seed: int = 0, rare: float = 0.07) -> pd.DataFrame:
    """scikit-learn's breast-cancer table (shipped with it) with malignant tumours cut to `rare` of the rows."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True).frame
    benign, malignant = data[data.target == 1], data[data.target == 0]
    keep = int(round(len(benign) * rare / (1 - rare)))
    cut = pd.concat([benign, malignant.sample(keep, random_state=seed)]).sample(frac=1.0, random_state=seed)
    return cut.assign(malignant=np.where(cut.pop("target") == 0, "yes", "no")).reset_index(drop=True)


def dataset_params(source: str, label: str, epochs: int, candidates: dict, primary: str = "auto") -> dict[str, Any]:
    """One table dataset of the real schema, trained `epochs` epochs (early stopping as by default)."""
    return {
        "modality": "table",
        "ingest": {"source": source, "label": label},
        "train": {"epochs": epochs, "batch_size": 64, "candidates": candidates},
        "evaluate": {"primary_metric": primary},
        "register": {"model_name": "churn"},
    }


@contextlib.contextmanager
def inside(path: Path) -> Iterator[Path]:
    before = os.getcwd()
    os.chdir(path)
    try:
        yield path
    finally:
        os.chdir(before)


def run(table: pd.DataFrame, label: str, epochs: int) -> dict[str, Any]:
    """Ingest, prepare and train once; evaluate once per primary metric. {metric: report}, and the timings."""
    from pipelines.config import ComputeParams, DatasetParams, EvaluateParams
    from pipelines.stages.evaluate import evaluate
    from pipelines.stages.ingest import ingest
    from pipelines.stages.prepare import prepare
    from pipelines.stages.train import train

    with tempfile.TemporaryDirectory() as tmp, inside(Path(tmp)):
        table.to_csv("table.csv", index=False)
        started = time.perf_counter()
        params = DatasetParams.model_validate(dataset_params("table.csv", label, epochs, CANDIDATES))
        ingest("churn", params)
        prepare("churn", params)
        summary = train("churn", params, ComputeParams(storage_path=str(Path(tmp) / "ray")))
        trained = time.perf_counter() - started
        reports = {}
        for metric in PRIMARY_METRICS:
            choice = DatasetParams.model_validate(dataset_params("table.csv", label, epochs, CANDIDATES, metric))
            reports[metric] = evaluate("churn", EvaluateParams(), choice=choice.evaluate)
        weights = {n: (c.get("class_weights") or {}).get("weights") for n, c in summary["candidates"].items()}
        return {"reports": reports, "seconds": trained, "weights": weights}


def markdown(result: dict[str, Any], title: str) -> str:
    """The test metrics of every candidate and baseline, then which candidate each primary metric picks."""
    report = result["reports"]["accuracy"]
    rows = {**report["candidates"], **{f"baseline: {n}": s for n, s in report["baselines"].items()}}
    lines = [f"### {title}", "", "| model | " + " | ".join(f"test {m}" for m in SHOWN) + " |"]
    lines.append("|---" * (len(SHOWN) + 1) + "|")
    for name, scores in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{scores[f'test/{m}']:.3f}" for m in SHOWN) + " |")
    lines += ["", "| primary metric | val of plain | val of balanced | registered |", "|---|---|---|---|"]
    for metric, rep in result["reports"].items():
        values = rep["selection"]["values"]
        lines.append(f"| {metric} | {values['plain']:.3f} | {values['balanced']:.3f} | {rep['best_candidate']} |")
    weights = result["weights"]["balanced"]
    lines += ["", f"Class weights of `balanced` (from the training split): {weights}; train {result['seconds']:.0f} s."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--table", choices=("generated", "breast_cancer"), default="generated")
    args = parser.parse_args()
    if args.table == "generated":
        table, label = generated_table(args.rows, args.seed), "churned"
        title = f"generated: {args.rows} rows, 7 % churned (make_classification, seed {args.seed})"
    else:
        table, label = rare_breast_cancer(args.seed), "malignant"
        title = f"breast cancer, malignant cut to 7 % ({len(table)} rows, seed {args.seed})"
    print(markdown(run(table, label, args.epochs), title))


if __name__ == "__main__":
    main()
