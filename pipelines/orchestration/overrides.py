"""The flow's params: `-S key=value` overrides (like `dvc exp run -S`) and writing them to params.yaml.

No Prefect, torch or Ray here: the command line validates with this before starting anything.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from pipelines import paths
from pipelines.atomic import atomic_path
from pipelines.config import PipelineParams
from pipelines.errors import PipelineInputError

PREVIOUS_PARAMS = Path(".dvc/tmp/params.previous.yaml")


def parse_overrides(pairs: list[str], base: dict) -> dict:
    """Apply `-S a.b.c=value` overrides (YAML values), like `dvc exp run -S`."""
    data = yaml.safe_load(yaml.safe_dump(base))
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise PipelineInputError(f"-S {pair!r}: expected key=value, e.g. -S datasets.digits.train.epochs=5")
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            if node.get(part) is None:  # an absent or null section (`search: null`) is started
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise PipelineInputError(f"-S {pair!r}: {part} is not a section")
        node[leaf] = yaml.safe_load(raw)
    return data


def write_params(params: PipelineParams, workdir: Path) -> bool:
    """Write validated flow parameters to params.yaml (DVC reads them from there); the old file goes to .dvc/tmp/."""
    target = workdir / paths.PARAMS_FILE
    current = yaml.safe_load(target.read_text()) if target.exists() else None
    wanted = params.model_dump(mode="json")
    if current == wanted:
        return False
    if target.exists():
        (workdir / PREVIOUS_PARAMS).parent.mkdir(parents=True, exist_ok=True)
        (workdir / PREVIOUS_PARAMS).write_text(target.read_text())
    with atomic_path(target) as tmp:
        tmp.write_text(params.to_yaml())
    return True
