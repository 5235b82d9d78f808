"""The one typed schema for params.yaml.

The same model is the Prefect flow's parameter type (so the UI renders a
validated form) and what every stage reads, so a bad value is refused in the
same words whichever front door it came through: params.yaml, `dvc exp run -S`,
the CLI or the Prefect UI.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import Field, GetCoreSchemaHandler, ValidationError, model_validator

import models  # noqa: F401  (registers the built-in families; imports no torch)
from models import catalogue
from models.candidate import CandidateBase
from models.class_weights import ClassWeighting
from pipelines.config.messages import describe_validation_error, tag_values  # noqa: F401  (re-exported)
from pipelines.config.modalities import (  # noqa: F401  (IngestParams, PrepareParams: the modalities' types)
    IngestParams,
    IngestSection,
    Modality,
    PrepareParams,
    PrepareSection,
    Strict,
    TableIngest,
    TablePrepare,
    tag_sections,
)
from pipelines.config.run_wide import ComputeParams, EvaluateParams, RegisterParams
from pipelines.config.search import SearchParams
from pipelines.config.task_choices import DatasetEvaluateParams, check_class_weights, check_primary_metric
from pipelines.errors import PipelineInputError
from pipelines.paths import PARAMS_FILE

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"


# ------------------------------------------------------------------ candidates
# Each model family owns its candidate class (models/<family>.py); the union of them, discriminated on
# `family`, is built from the catalogue whenever a schema is built. A family registered after this
# module was imported (a plugin, a test) triggers `rebuild_schema()` through the catalogue's
# `on_change`, which rebuilds every model below in place, so PipelineParams, the Prefect form and
# every validation see it without any other file changing.


def candidate_union() -> Any:
    """The Annotated union of every registered family's candidate class, discriminated on `family`."""
    classes = catalogue.candidate_classes()
    if len(classes) == 1:  # a union of one is its member, and takes no discriminator
        return classes[0]
    return Annotated[Union[tuple(classes)], Field(discriminator="family")]  # noqa: UP007 (built at run time)


class _FromCatalogue:
    """Marks a field whose schema is the catalogue's candidate union at the time the schema is built."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        return handler.generate_schema(candidate_union())


Candidate = Annotated[CandidateBase, _FromCatalogue()]


class EarlyStoppingParams(Strict):
    monitor: str = Field("val/loss", min_length=1)
    mode: Literal["min", "max"] = "min"
    patience: int = Field(5, ge=1)


class DatasetTrainParams(Strict):
    seed: int = Field(42, ge=0)
    epochs: int = Field(30, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1, description="Global batch size, split across workers")
    data_loading: Literal["auto", "memory", "stream"] = Field(
        "auto",
        description="memory: each worker holds the train and val splits as tensors; stream: Ray Data streams "
        "each worker its shard (data bigger than a worker's memory, no shared file system); auto: memory when "
        "the splits fit comfortably in a worker's share of memory, else stream",
    )
    early_stopping: EarlyStoppingParams = Field(default_factory=EarlyStoppingParams)
    # Per dataset, not in the run-wide `train` (compute) section: it is about this dataset's labels.
    class_weights: ClassWeighting = Field(
        "none",
        description="balanced: weigh each class by n / (k * its rows in the training split) in the BCE/CCE loss "
        "and in the classical baselines, for imbalanced labels; a candidate may set its own",
    )
    candidates: dict[str, Candidate] = Field(min_length=1)
    search: SearchParams | None = Field(
        None, description="Hyperparameter search over one candidate (off unless enabled)"
    )

    @model_validator(mode="after")
    def _names(self) -> DatasetTrainParams:
        for name in self.candidates:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(f"candidate name {name!r} may hold only letters, digits, '-' and '_'")
        if self.search is not None:
            self._check_search(self.search)
        return self

    def _check_search(self, search: SearchParams) -> None:
        if search.candidate not in self.candidates:
            raise ValueError(
                f"search.candidate: {search.candidate!r} is not a candidate; have: {', '.join(self.candidates)}"
            )
        cand = self.candidates[search.candidate]
        fields = sorted(k for k in type(cand).model_fields if k != "family")
        for key, dim in search.space.items():
            if key not in fields:
                raise ValueError(
                    f"search.space.{key}: not a knob of candidate {search.candidate!r} ({cand.family}); "
                    f"use one of: {', '.join(fields)}"
                )
            if type(cand).model_fields[key].annotation is int and dim.type in ("uniform", "loguniform"):
                raise ValueError(
                    f"search.space.{key}: an integer knob; search it with randint or choice, not {dim.type}"
                )
            for value in dim.extremes():  # every sampled value must make a valid candidate
                try:
                    type(cand).model_validate({**cand.model_dump(), key: value})
                except ValidationError as err:
                    problem = err.errors()[0]["msg"].removeprefix("Value error, ")
                    raise ValueError(f"search.space.{key}: {value!r} is not a valid {key}: {problem}") from None

    def searched_metric(self) -> tuple[str, str]:
        """What the search ranks trials by: its own metric/mode, else early stopping's."""
        s = self.search
        return (s.metric if s and s.metric else self.early_stopping.monitor), (
            s.mode if s and s.mode else self.early_stopping.mode
        )


class DatasetRegisterParams(Strict):
    model_name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Name of the model in the registry")


def check_families_fit(modality: str, train: DatasetTrainParams) -> None:
    """Every candidate's family can learn from the dataset's modality (a check across two sections)."""
    fitting = catalogue.families_for(modality)
    for name, cand in train.candidates.items():
        if cand.family not in fitting:
            raise ValueError(
                f"train.candidates.{name}.family: {cand.family} cannot learn from {modality} data; "
                f"use one of: {', '.join(fitting)}"
            )


def check_task_choices(modality: str, ingest: Any, train: Any = None, evaluate: Any = None) -> None:
    """The primary metric and the class weights fit the tasks this dataset's data can make (None: not read)."""
    if evaluate is not None:
        check_primary_metric(modality, ingest, evaluate)
    if train is not None:
        check_class_weights(modality, ingest, train)


def check_batch_fits_workers(dataset: str, train: DatasetTrainParams, compute: ComputeParams) -> None:
    if isinstance(compute.num_workers, int) and train.batch_size < compute.num_workers:
        raise ValueError(
            f"datasets.{dataset}.train.batch_size: {train.batch_size} is the global batch and must be "
            f"at least train.num_workers ({compute.num_workers})"
        )


# BaseModel inherits ABCMeta.register; a section named "register" shadows it
# harmlessly, so the warning pydantic raises about it is silenced here.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "register"')

    class DatasetParams(Strict):
        """One dataset and the candidates trained on it: one chain of stages in dvc.yaml."""

        modality: Modality = "table"
        ingest: IngestSection = Field(default_factory=TableIngest, description="Keys of the dataset's modality")
        prepare: PrepareSection = Field(default_factory=TablePrepare, description="Keys of the dataset's modality")
        train: DatasetTrainParams = Field(...)
        evaluate: DatasetEvaluateParams = Field(
            default_factory=DatasetEvaluateParams, description="How this dataset's candidates are judged"
        )
        register: DatasetRegisterParams = Field(...)  # explicit: the name shadows BaseModel.register

        @model_validator(mode="before")
        @classmethod
        def _sections_of_the_modality(cls, data: Any) -> Any:
            return tag_sections(data)  # ingest and prepare are validated by the modality's classes

        @model_validator(mode="after")
        def _families_fit_the_data(self) -> DatasetParams:
            check_families_fit(self.modality, self.train)
            check_task_choices(self.modality, self.ingest, self.train, self.evaluate)
            return self


def _default_datasets() -> dict[str, DatasetParams]:
    from pipelines.config.defaults import DEFAULT_DATASETS

    return {name: DatasetParams.model_validate(d) for name, d in DEFAULT_DATASETS.items()}


with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "register"')

    class PipelineParams(Strict):
        datasets: dict[str, DatasetParams] = Field(default_factory=_default_datasets, min_length=1)
        train: ComputeParams = Field(default_factory=ComputeParams)
        evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
        register: RegisterParams = Field(default_factory=RegisterParams)

        @model_validator(mode="after")
        def _check(self) -> PipelineParams:
            for name, ds in self.datasets.items():
                if not re.match(NAME_PATTERN, name):
                    raise ValueError(f"dataset name {name!r} may hold only letters, digits, '-' and '_'")
                check_batch_fits_workers(name, ds.train, self.train)
            registering: dict[str, str] = {}
            for name, ds in self.datasets.items():
                other = registering.setdefault(ds.register.model_name, name)
                if other != name:  # one line of versions, fed from two datasets: they would race, or be refused
                    raise ValueError(
                        f"datasets.{other}.register.model_name and datasets.{name}.register.model_name are both "
                        f"{ds.register.model_name!r}: each dataset registers under a model name of its own"
                    )
            return self

        def dataset(self, name: str) -> DatasetParams:
            if name not in self.datasets:
                raise PipelineInputError(
                    f"params.yaml: datasets.{name}: no such dataset; have: {', '.join(self.datasets)}"
                )
            return self.datasets[name]

        def to_yaml(self) -> str:
            return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def rebuild_schema() -> None:
    """Rebuild, in place, every model whose schema holds the candidate union (inner ones first).

    Called by the catalogue after a family is (un)registered; call it yourself after changing a
    candidate class by hand. Classes are rebuilt in place, so every holder of a reference (the flow's
    signature, a stage) sees the new schema.
    """
    for model in (DatasetTrainParams, DatasetParams, PipelineParams):
        model.model_rebuild(force=True)


catalogue.on_change(rebuild_schema)


def validate_params(data: Any, source: str = "params") -> PipelineParams:
    try:
        return PipelineParams.model_validate(data if data is not None else {})
    except ValidationError as err:
        raise PipelineInputError(describe_validation_error(err, source)) from None


def read_params_file(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """params.yaml as plain data (not validated yet); an empty file is an empty mapping."""
    path = Path(path)
    if not path.is_file():
        raise PipelineInputError(f"{path}: file not found (expected the pipeline's params.yaml)")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise PipelineInputError(f"{path}: not valid YAML: {err}") from None
    if data is not None and not isinstance(data, dict):
        raise PipelineInputError(
            f"{path}: expected a mapping of sections (datasets, train, evaluate, register), got {type(data).__name__}"
        )
    return data or {}


def load_params(path: str | Path = PARAMS_FILE) -> PipelineParams:
    return validate_params(read_params_file(path), str(path))


def main() -> None:
    """`python -m pipelines.config [params.yaml]`: validate and print the resolved params."""
    import sys

    from pipelines.errors import cli_entry

    cli_entry(lambda: print(load_params(sys.argv[1] if len(sys.argv) > 1 else PARAMS_FILE).to_yaml(), end=""))()


if __name__ == "__main__":
    main()
