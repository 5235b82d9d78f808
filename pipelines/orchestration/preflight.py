"""Checks that fail a run in a second, before Prefect's server or Ray starts: the sources of the datasets that will
run, and what their params say of the model each registers.

Only what is cheap and certain: a local file or folder that does not exist, cannot be read, or
is empty; a model name in a local registry whose versions are of another modality, task or horizon than
the params state (the inferred task, classes and columns are checked at prepare). Remote sources
(s3://, https://) and their contents are the ingest stage's to check (its errors name the row and
column); a built-in name is checked there too.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pipelines.config import PipelineParams
from pipelines.errors import PipelineInputError

BUILT_IN = re.compile(r"^(sklearn|python|statsmodels):")


def local_source(source: str, workdir: Path) -> Path | None:
    """The local path a source names (relative to the project, as the stages run there), or None."""
    if "://" in source or BUILT_IN.match(source):
        return None
    path = Path(source).expanduser()
    return path if path.is_absolute() else workdir / path


def check_sources(params: PipelineParams, datasets: list[str], workdir: Path) -> None:
    """Refuse a missing, unreadable or empty local source of any of `datasets`, naming its key and path."""
    problems = []
    for name in datasets:
        source = params.datasets[name].ingest.source
        path = local_source(source, workdir)
        if path is None:
            continue
        key = f"datasets.{name}.ingest.source"
        if not path.exists():
            problems.append(f"{key}: {source}: file does not exist")
        elif not os.access(path, os.R_OK | (os.X_OK if path.is_dir() else 0)):
            problems.append(f"{key}: {source}: not readable (permissions)")
        elif path.is_file() and path.stat().st_size == 0:
            problems.append(f"{key}: {source}: the file is empty")
    if problems:
        raise PipelineInputError("; ".join(problems))


def check_model_lines(params: PipelineParams, datasets: list[str], workdir: Path) -> None:
    """Refuse a dataset whose params state another kind of model than its model name holds (local registries)."""
    location = params.register.registry
    if "://" in location:
        return  # an S3 registry costs a request and may be down: prepare checks it
    from pipelines.registry.local import LocalModelRegistry
    from pipelines.registry.model_line import check_line, declared_signature

    root = Path(location).expanduser()
    registry = LocalModelRegistry(root if root.is_absolute() else workdir / root)
    for name in datasets:
        ds = params.datasets[name]
        held, versions = registry.line_signature(ds.register.model_name)
        check_line(ds.register.model_name, held, versions, declared_signature(ds), name)
