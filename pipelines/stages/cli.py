"""The one argument every stage takes (which dataset of params.yaml to work on), and what each stage reads.

READS lists, per stage, the params paths its code reads; dvc.yaml declares the same paths as the
stage's params (tests/test_dvc_yaml.py checks it), and the stage validates and receives only those,
so a typo in another dataset's section does not stop it.

INPUTS lists, per stage, the DVC-tracked outputs of earlier stages it reads (dvc.yaml declares them as its
deps; tests/test_dvc_yaml.py checks it): before the stage reads them, their bytes are checked against
dvc.lock (pipelines/integrity.py), since DVC itself trusts a file whose size and mtime did not change.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipelines import workspace
from pipelines.config import DatasetParams, PipelineParams, read_params_file
from pipelines.config.sections import validate_sections
from pipelines.errors import PipelineInputError
from pipelines.integrity import verify_inputs
from pipelines.paths import PARAMS_FILE, DatasetPaths

# "{dataset}" is the dataset the stage runs for; a bare name is a section shared by every dataset.
READS: dict[str, tuple[str, ...]] = {
    "ingest": ("datasets.{dataset}.modality", "datasets.{dataset}.ingest"),
    # the modality picks the preprocessing, which reads the label column and the other ingest choices;
    # the model name and registry: a model of another kind than the name's versions is refused before training
    "prepare": (
        "datasets.{dataset}.modality",
        "datasets.{dataset}.ingest",
        "datasets.{dataset}.prepare",
        "datasets.{dataset}.register",
        "register",
    ),
    # the modality is read to check every candidate's family can learn from the data
    "train": ("datasets.{dataset}.modality", "datasets.{dataset}.train", "train"),
    # the dataset's primary metric picks the best candidate;
    # the model name, registry and promote alias: the alias's current version is scored on the same test split
    "evaluate": ("evaluate", "datasets.{dataset}.evaluate", "datasets.{dataset}.register", "register"),
    # the model card records the dataset's whole config and the compute it trained with
    "register": ("datasets.{dataset}", "train", "register", "evaluate"),
}


# DatasetPaths attributes: the data each stage reads that an earlier stage wrote.
INPUTS: dict[str, tuple[str, ...]] = {
    "ingest": (),
    "prepare": ("raw_dir",),
    "train": ("prepared_dir",),
    "evaluate": ("prepared_dir", "train_dir"),
    "register": ("prepared_dir", "train_dir", "metrics_file"),
}


def reads_for(stage: str) -> tuple[str, ...]:
    return READS[stage]


def inputs_for(stage: str, dataset: str) -> list[Path]:
    where = DatasetPaths(dataset)
    return [getattr(where, name) for name in INPUTS[stage]]


def pipeline_and_dataset(stage: str, argv: list[str] | None = None) -> tuple[PipelineParams, str]:
    """The params this stage reads (validated; the rest are NotRead placeholders) and the dataset's name."""
    args = sys.argv[1:] if argv is None else argv
    workspace.refuse_if_held_elsewhere(".")  # a `dvc repro` by hand while a pipeline run holds the workspace
    data = read_params_file(PARAMS_FILE)
    if len(args) != 1:
        names = ", ".join(data.get("datasets") or {}) if isinstance(data.get("datasets"), dict) else "none"
        raise PipelineInputError(
            f"usage: python -m pipelines.stages.{stage} <dataset>; datasets in params.yaml: {names}"
        )
    params = validate_sections(data, args[0], READS[stage], str(PARAMS_FILE), stage)
    verify_inputs(inputs_for(stage, args[0]))  # damaged bytes DVC restored from its cache never reach the stage
    return params, args[0]


def dataset_from_argv(stage: str, argv: list[str] | None = None) -> tuple[str, DatasetParams]:
    params, name = pipeline_and_dataset(stage, argv)
    return name, params.datasets[name]
