"""Validate only the sections of params.yaml that one stage reads.

A stage of one dataset must not fail on a typo in another dataset's section, nor on a section it never
reads: `validate_sections` checks just the listed paths (with the same messages as full validation)
and hands back a PipelineParams whose other sections are `NotRead` placeholders, so a stage that
starts reading a section it does not declare fails at once instead of silently depending on an
undeclared param. The Prefect flow still validates everything before it runs anything.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

from pydantic import ConfigDict, ValidationError, create_model

from pipelines.config import (
    DatasetParams,
    PipelineParams,
    check_batch_fits_workers,
    check_families_fit,
    check_task_choices,
    describe_validation_error,
    tag_sections,
)
from pipelines.errors import PipelineInputError


class NotRead:
    """Stands for a section the stage did not declare; touching it is a bug in the stage, said plainly."""

    def __init__(self, key: str, reader: str):
        self._key, self._reader = key, reader

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise RuntimeError(
            f"stage {self._reader!r} read {self._key}.{attr}, which it does not declare: add {self._key} to its "
            "entry in pipelines/stages/cli.py READS and to its params in dvc.yaml"
        )

    def __repr__(self) -> str:
        return f"NotRead({self._key!r})"


def _subset(model: type, fields: Iterable[str], name: str) -> type:
    """A model with only `fields` of `model` (same types and checks), ignoring every other key."""
    chosen = {f: (model.model_fields[f].annotation, model.model_fields[f]) for f in fields}
    with warnings.catch_warnings():  # a field named "register" shadows BaseModel.register, harmlessly
        warnings.filterwarnings("ignore", message='Field name "register"')
        return create_model(name, __config__=ConfigDict(extra="ignore"), **chosen)


def _validate(model: type, raw: Any, prefix: tuple, source: str) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        msg = describe_validation_error(err, source)
        lines = [_prefixed(line, source, prefix) for line in msg.splitlines()]
        raise PipelineInputError("\n".join(lines)) from None


def _prefixed(line: str, source: str, prefix: tuple) -> str:
    key, _, msg = line.removeprefix(f"{source}: ").partition(": ")
    key = ".".join([*prefix, key]) if key != "(top level)" else ".".join(prefix)
    return f"{source}: {key}: {msg}"


def _cross_check(check: Any, prefix: str, source: str) -> None:
    try:
        check()
    except ValueError as err:
        key, _, msg = str(err).partition(": ")
        raise PipelineInputError(f"{source}: {prefix}{key}: {msg}") from None


def validate_sections(data: dict, dataset: str, reads: Iterable[str], source: str, reader: str) -> PipelineParams:
    """Validate the `reads` paths of `data` ("datasets.{dataset}[.section]" or a shared section) only."""
    from pipelines.config.defaults import DEFAULT_DATASETS

    datasets = data.get("datasets", DEFAULT_DATASETS)  # no datasets key: the defaults, as in full validation
    if not isinstance(datasets, dict) or dataset not in datasets:
        have = ", ".join(datasets) if isinstance(datasets, dict) else "none"
        raise PipelineInputError(f"{source}: datasets.{dataset}: no such dataset; have: {have}")
    raw_ds = tag_sections(datasets[dataset] if isinstance(datasets[dataset], dict) else {})
    paths = [p.format(dataset=dataset).split(".") for p in reads]
    shared_fields = [p[0] for p in paths if p[0] != "datasets"]
    ds_fields = [p[2] for p in paths if p[0] == "datasets" and len(p) == 3]
    if any(p[0] == "datasets" and len(p) == 2 for p in paths):  # the whole dataset
        ds_fields = list(DatasetParams.model_fields)
    shared = _validate(_subset(PipelineParams, shared_fields, "SharedSections"), data, (), source)
    ds = _validate(_subset(DatasetParams, ds_fields, "DatasetSections"), raw_ds, ("datasets", dataset), source)
    if {"modality", "train"} <= set(ds_fields):
        _cross_check(lambda: check_families_fit(ds.modality, ds.train), f"datasets.{dataset}.", source)
    if {"modality", "ingest"} <= set(ds_fields):
        train, evaluate = (getattr(ds, f) if f in ds_fields else None for f in ("train", "evaluate"))
        prefix = f"datasets.{dataset}."
        _cross_check(lambda: check_task_choices(ds.modality, ds.ingest, train, evaluate), prefix, source)
    if "train" in ds_fields and "train" in shared_fields:
        _cross_check(lambda: check_batch_fits_workers(dataset, ds.train, shared.train), "", source)

    def value(obj: Any, field: str, key: str) -> Any:
        return getattr(obj, field) if field in type(obj).model_fields else NotRead(key, reader)

    ds_params = DatasetParams.model_construct(
        **{f: value(ds, f, f"datasets.{dataset}.{f}") for f in DatasetParams.model_fields}
    )
    others = {f: value(shared, f, f) for f in PipelineParams.model_fields if f != "datasets"}
    return PipelineParams.model_construct(datasets={dataset: ds_params}, **others)
