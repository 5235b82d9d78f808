"""Every file the stages read or write, in one place.

Each dataset in params.yaml has its own chain of stages (dvc.yaml `foreach`)
and its own directories: data/raw/<dataset>/, data/prepared/<dataset>/, ...

Paths are relative to the project root (where dvc.yaml lives). DVC runs each
stage with the project root as its working directory; Ray workers do not, so
anything handed to Ray goes through `absolute()` first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PARAMS_FILE = Path("params.yaml")
DVC_LOCK = Path("dvc.lock")
DATA_DIR = Path("data")


@dataclass(frozen=True)
class DatasetPaths:
    name: str

    # ingest
    @property
    def raw_dir(self) -> Path:
        return DATA_DIR / "raw" / self.name

    @property
    def raw_source_info(self) -> Path:
        return self.raw_dir / "source.json"

    @property
    def raw_profile(self) -> Path:
        """Tables: each column's type, missing count, distinct values and range (written at ingest)."""
        return self.raw_dir / "profile.json"

    # prepare
    @property
    def prepared_dir(self) -> Path:
        return DATA_DIR / "prepared" / self.name

    @property
    def prepared_meta(self) -> Path:
        return self.prepared_dir / "meta.json"

    @property
    def test_inputs(self) -> Path:
        """Tables: the test split's rows before preprocessing (another version's preprocessing can read them)."""
        return self.prepared_dir / "test_inputs.parquet"

    def split_dir(self, split: str) -> Path:
        """One split's Parquet shards (train, val or test): read and written by pipelines.handoffs.splits only."""
        return self.prepared_dir / split

    # train
    @property
    def train_dir(self) -> Path:
        return DATA_DIR / "train" / self.name

    @property
    def train_summary(self) -> Path:
        return self.train_dir / "summary.json"

    def candidate_dir(self, candidate: str) -> Path:
        return self.train_dir / candidate

    def candidate_checkpoint(self, candidate: str) -> Path:
        """Weights-only checkpoint of a candidate's best epoch (safe to torch.load)."""
        return self.candidate_dir(candidate) / "model.pt"

    def candidate_history(self, candidate: str) -> Path:
        return self.candidate_dir(candidate) / "history.csv"

    # evaluate
    @property
    def evaluate_dir(self) -> Path:
        return DATA_DIR / "evaluate" / self.name

    @property
    def metrics_file(self) -> Path:
        return self.evaluate_dir / "metrics.json"

    @property
    def plots_dir(self) -> Path:
        return self.evaluate_dir / "plots"

    # register
    @property
    def registered_file(self) -> Path:
        return DATA_DIR / "register" / f"{self.name}.json"


def absolute(path: str | Path) -> Path:
    """Resolve a project-relative path (Ray workers run in their own cwd)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (Path.cwd() / p).resolve()
