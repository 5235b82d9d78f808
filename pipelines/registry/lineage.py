"""Where a model came from: git commit, DVC data hash, package versions."""

from __future__ import annotations

import os
import subprocess
from importlib import metadata
from pathlib import Path

from pipelines import paths
from pipelines.integrity import locked_stages  # dvc.lock's one reader

PACKAGES = ("torch", "lightning", "ray", "torchmetrics", "prefect", "dvc", "numpy", "pandas")


def git_commit() -> dict[str, object]:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (subprocess.CalledProcessError, FileNotFoundError):
        # A container image has no .git: its build passes the commit in (infra/Dockerfile).
        return {"commit": os.environ.get("GIT_COMMIT") or None, "dirty": None}


def recorded_stages(workdir: str | Path, stages: list[str]) -> list[str]:
    """The stages among `stages` that <workdir>/dvc.lock records: only their outputs can be pulled."""
    recorded = locked_stages(Path(workdir) / paths.DVC_LOCK.name)
    return [stage for stage in stages if stage in recorded]


def dvc_output_hash(stage: str, out_path: Path) -> str | None:
    """The md5 DVC recorded in dvc.lock for one stage output (None outside a DVC run)."""
    for out in locked_stages().get(stage, {}).get("outs", []):
        if Path(out["path"]) == out_path:
            return out.get("md5")
    return None


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions
