"""The one argument every stage takes: which dataset of params.yaml to work on."""

from __future__ import annotations

import sys

from pipelines import workspace
from pipelines.config import DatasetParams, PipelineParams, load_params
from pipelines.errors import PipelineInputError


def pipeline_and_dataset(stage: str, argv: list[str] | None = None) -> tuple[PipelineParams, str]:
    """For stages that also read the shared sections (train compute, evaluate, register)."""
    args = sys.argv[1:] if argv is None else argv
    workspace.refuse_if_held_elsewhere(".")  # a `dvc repro` by hand while a pipeline run holds the workspace
    params = load_params()
    if len(args) != 1:
        raise PipelineInputError(
            f"usage: python -m pipelines.{stage} <dataset>; datasets in params.yaml: {', '.join(params.datasets)}"
        )
    params.dataset(args[0])  # a clear error for an unknown name
    return params, args[0]


def dataset_from_argv(stage: str, argv: list[str] | None = None) -> tuple[str, DatasetParams]:
    params, name = pipeline_and_dataset(stage, argv)
    return name, params.datasets[name]
