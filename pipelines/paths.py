"""Every file the stages read or write, in one place.

Paths are relative to the project root (where dvc.yaml lives). DVC runs each
stage with the project root as its working directory; Ray workers do not, so
anything handed to Ray goes through `absolute()` first.
"""
from __future__ import annotations

from pathlib import Path

PARAMS_FILE = Path("params.yaml")
DVC_LOCK = Path("dvc.lock")

RAW_DIR = Path("data/raw")
RAW_TABLE = RAW_DIR / "table.parquet"
RAW_SOURCE_INFO = RAW_DIR / "source.json"

PREPARED_DIR = Path("data/prepared")
PREPARED_META = PREPARED_DIR / "meta.json"

TRAIN_DIR = Path("data/train")
TRAIN_SUMMARY = TRAIN_DIR / "summary.json"

EVALUATE_DIR = Path("data/evaluate")
METRICS_FILE = EVALUATE_DIR / "metrics.json"
PLOTS_DIR = EVALUATE_DIR / "plots"

REGISTER_DIR = Path("data/register")
REGISTERED_FILE = REGISTER_DIR / "registered.json"


def split_file(split: str) -> Path:
    """The compact array file of one split: train, val or test."""
    return PREPARED_DIR / f"{split}.npz"


def candidate_dir(candidate: str) -> Path:
    return TRAIN_DIR / candidate


def candidate_checkpoint(candidate: str) -> Path:
    """Weights-only checkpoint of a candidate's best epoch (safe to torch.load)."""
    return candidate_dir(candidate) / "model.pt"


def candidate_history(candidate: str) -> Path:
    return candidate_dir(candidate) / "history.csv"


def absolute(path: str | Path) -> Path:
    """Resolve a project-relative path (Ray workers run in their own cwd)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (Path.cwd() / p).resolve()
