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
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipelines.errors import PipelineInputError
from pipelines.paths import PARAMS_FILE

Modality = Literal["table", "image", "text", "series"]
TableTask = Literal["auto", "regression", "binary", "multiclass"]
Activation = Literal["relu", "leaky_relu", "tanh", "sigmoid"]
Loss = Literal["auto", "mse", "bce", "cce"]
OptimizerName = Literal["sgd", "adam", "rmsprop"]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"


class Strict(BaseModel):
    # extra="forbid" is what turns a misspelled key into an error naming it.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _positive(values: list[int], key: str) -> None:
    if any(v <= 0 for v in values):
        raise ValueError(f"{key}: sizes must be positive integers, got {values}")


# ------------------------------------------------------------------ ingest


class IngestParams(Strict):
    source: str = Field(
        "sklearn:breast_cancer",
        description="Built-in name (sklearn:<table>, sklearn:digits, python:pydoc-topics, statsmodels:<series>), "
        "a local file, s3://bucket/key or an https:// URL",
        min_length=1,
    )
    label: str = Field("target", description="Tables: the label column", min_length=1)
    task: TableTask = Field("auto", description="Tables: auto infers regression/binary/multiclass from the label")
    column: str = Field("value", description="Series: the value column of a CSV/Parquet series", min_length=1)
    missing: Literal["error", "drop", "interpolate"] = Field(
        "error", description="Rows with missing values: refuse, drop them, or (series) interpolate linearly"
    )


# ------------------------------------------------------------------ prepare


class PrepareParams(Strict):
    seed: int = Field(42, ge=0)
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)
    normalize: bool = Field(True, description="Standardize inputs with statistics of the training split only")
    # text
    context_length: int = Field(12, ge=1, le=512, description="Text: words of context that predict the next word")
    max_vocab: int = Field(2000, ge=10, description="Text: most frequent training words kept; the rest become <unk>")
    min_count: int = Field(
        2, ge=1, description="Text: a word needs this many training occurrences to be in the vocabulary"
    )
    max_tokens: int | None = Field(None, ge=100, description="Text: use only the first N tokens of the corpus")
    # series
    window: int = Field(30, ge=2, le=10_000, description="Series: past steps that predict the next one")
    season_length: int = Field(12, ge=1, description="Series: period of the seasonal-naive baseline")

    @model_validator(mode="after")
    def _season_in_window(self) -> PrepareParams:
        if self.season_length > self.window:
            raise ValueError(f"season_length: {self.season_length} must not exceed window ({self.window})")
        return self


# ------------------------------------------------------------------ candidates


class CandidateBase(Strict):
    """What every model family shares: the loss and the optimizer."""

    loss: Loss = Field(
        "auto", description="auto: mse for regression/forecast, bce for binary, cce for multi-class/next word"
    )
    optimizer: OptimizerName = "adam"
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum / RMSprop momentum")
    lr_schedule: Literal["none", "cosine", "step"] = Field("none", description="Per-epoch learning-rate schedule")
    lr_step_size: int = Field(10, ge=1, description="step schedule: epochs between decays")
    lr_gamma: float = Field(0.5, gt=0, le=1, description="step schedule: decay factor")
    activation: Activation = "relu"
    dropout: float = Field(0.1, ge=0, lt=1)


class FnnCandidate(CandidateBase):
    family: Literal["fnn"] = "fnn"
    hidden: list[int] = Field(default_factory=lambda: [64, 32], min_length=1)

    @model_validator(mode="after")
    def _check(self) -> FnnCandidate:
        _positive(self.hidden, "hidden")
        return self


class CnnCandidate(CandidateBase):
    family: Literal["cnn"]
    filters: list[int] = Field(
        default_factory=lambda: [16, 32], min_length=1, description="Channels of each conv block"
    )
    kernel_size: int = Field(3, ge=1, le=15)
    pool: int = Field(2, ge=1, le=4, description="Max-pool size after each block (1: no pooling)")
    dense: list[int] = Field(default_factory=lambda: [64], description="Hidden sizes of the dense head")

    @model_validator(mode="after")
    def _check(self) -> CnnCandidate:
        _positive(self.filters, "filters")
        _positive(self.dense, "dense")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size: must be odd (same padding), got {self.kernel_size}")
        return self


class RnnCandidate(CandidateBase):
    family: Literal["lstm", "gru"]
    hidden_size: int = Field(64, ge=1)
    num_layers: int = Field(1, ge=1, le=8)
    embedding_dim: int = Field(32, ge=1, description="Text: size of the word embedding")
    activation: Activation = Field("tanh", description="Activation of the dense head after the recurrent layers")


Candidate = Annotated[FnnCandidate | CnnCandidate | RnnCandidate, Field(discriminator="family")]
TAG_VALUES = {"fnn", "cnn", "lstm", "gru", "table", "image", "text", "series"}


class EarlyStoppingParams(Strict):
    monitor: str = Field("val/loss", min_length=1)
    mode: Literal["min", "max"] = "min"
    patience: int = Field(5, ge=1)


class SearchDim(Strict):
    """One searched knob: loguniform/uniform/randint over [low, high] (randint: integers, both ends included),
    or choice over values."""

    type: Literal["loguniform", "uniform", "choice", "randint"]
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = Field(None, min_length=1, description="choice: the values tried")

    @model_validator(mode="after")
    def _check(self) -> SearchDim:
        if self.type == "choice":
            if self.values is None or self.low is not None or self.high is not None:
                raise ValueError("choice takes values: [...] (and no low/high)")
            return self
        if self.low is None or self.high is None or self.values is not None:
            raise ValueError(f"{self.type} takes low and high (and no values)")
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.type == "loguniform" and self.low <= 0:
            raise ValueError(f"loguniform needs low > 0, got {self.low}")
        if self.type == "randint" and not (float(self.low).is_integer() and float(self.high).is_integer()):
            raise ValueError(f"randint needs integer bounds, got {self.low}..{self.high}")
        return self

    def extremes(self) -> list[Any]:
        """The values a sample can take at the edges (every value for choice): each must be a valid knob."""
        if self.type == "choice":
            return list(self.values)
        if self.type == "randint":
            return [int(self.low), int(self.high)]
        return [self.low, self.high]


class SearchParams(Strict):
    """Hyperparameter search (Ray Tune + ASHA) over one candidate's knobs; its best trial replaces the candidate."""

    enabled: bool = False
    candidate: str = Field(description="The candidate whose knobs are searched")
    space: dict[str, SearchDim] = Field(
        min_length=1, description="Knob name -> {type, low, high} or {type: choice, values}"
    )
    num_samples: int = Field(8, ge=1, description="Trials (sampled configurations)")
    max_concurrent_trials: int = Field(2, ge=1, description="Trials at once; each takes train.num_workers workers")
    grace_period: int = Field(1, ge=1, description="ASHA: epochs every trial runs before it may be stopped")
    reduction_factor: int = Field(2, ge=2, description="ASHA: keep 1/reduction_factor of trials at each rung")
    metric: str | None = Field(None, description="Default: early_stopping.monitor")
    mode: Literal["min", "max"] | None = Field(None, description="Default: early_stopping.mode")


class DatasetTrainParams(Strict):
    seed: int = Field(42, ge=0)
    epochs: int = Field(30, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1, description="Global batch size, split across workers")
    early_stopping: EarlyStoppingParams = Field(default_factory=EarlyStoppingParams)
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


# Which families can learn from which data.
FAMILIES_FOR = {"table": ("fnn",), "image": ("cnn", "fnn"), "text": ("lstm", "gru"), "series": ("lstm", "gru", "fnn")}


# BaseModel inherits ABCMeta.register; a section named "register" shadows it
# harmlessly, so the warning pydantic raises about it is silenced here.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "register"')

    class DatasetParams(Strict):
        """One dataset and the candidates trained on it: one chain of stages in dvc.yaml."""

        modality: Modality = "table"
        ingest: IngestParams = Field(default_factory=IngestParams)
        prepare: PrepareParams = Field(default_factory=PrepareParams)
        train: DatasetTrainParams = Field(...)
        register: DatasetRegisterParams = Field(...)  # explicit: the name shadows BaseModel.register

        @model_validator(mode="after")
        def _families_fit_the_data(self) -> DatasetParams:
            for name, cand in self.train.candidates.items():
                if cand.family not in FAMILIES_FOR[self.modality]:
                    raise ValueError(
                        f"train.candidates.{name}.family: {cand.family} cannot learn from {self.modality} data; "
                        f"use one of: {', '.join(FAMILIES_FOR[self.modality])}"
                    )
            return self


class ComputeParams(Strict):
    """How training runs: shared by every dataset (and what a cluster profile overrides)."""

    num_workers: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        "auto",
        description="Ray Train workers (processes). auto: one per GPU with use_gpu; on a CPU machine of its own, "
        "one worker with all its cores",
    )
    use_gpu: bool = Field(False, description="One GPU per worker, NCCL; otherwise CPU workers with gloo")
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(1.0, gt=0, description="GPUs per worker when use_gpu (fractions share a GPU)")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"
    precision: Literal["32", "bf16-mixed"] = Field("32", description="bf16-mixed autocast on GPUs that support it")
    checkpoints_to_keep: int = Field(2, ge=1)
    storage_path: str = Field("data/ray_results", description="Ray Train checkpoints: a local/shared path or s3://")


class EvaluateParams(Strict):
    batch_size: int = Field(1024, ge=1)


class RegisterParams(Strict):
    registry: str = Field(
        "data/registry",
        description="Model registry: a local path or s3://bucket/prefix (endpoint from AWS_ENDPOINT_URL)",
    )
    promote_alias: str = Field(
        "production", pattern=r"^[A-Za-z][A-Za-z0-9_.-]*$", description="Alias a new version may take"
    )
    promote_policy: Literal["better", "always", "never"] = Field(
        "better", description="better: only if it beats the alias's version on the task's primary test metric"
    )


def _default_datasets() -> dict[str, DatasetParams]:
    from pipelines.config_defaults import DEFAULT_DATASETS

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
                workers = 1 if self.train.num_workers == "auto" else self.train.num_workers  # auto: >= 1 per GPU
                if ds.train.batch_size < workers:
                    raise ValueError(
                        f"datasets.{name}.train.batch_size: {ds.train.batch_size} is the global batch and must be "
                        f"at least train.num_workers ({self.train.num_workers})"
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


def _dotted_key(loc: tuple, problem_type: str) -> str:
    parts = [str(p) for i, p in enumerate(loc) if not (p in TAG_VALUES and i >= 2 and loc[i - 2] == "candidates")]
    if problem_type in ("union_tag_invalid", "union_tag_not_found"):
        parts.append("family")  # the discriminator itself is the bad key
    return ".".join(parts)


def describe_validation_error(err: ValidationError, source: str) -> str:
    """One line per problem, each naming the dotted key, e.g. datasets.tabular.train.candidates.fnn-relu.lr."""
    lines = []
    for problem in err.errors():
        key = _dotted_key(problem["loc"], problem["type"])
        msg = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "extra_forbidden":
            msg = "unknown key (misspelled?)"
        nested = re.match(r"^([A-Za-z0-9_.-]+): (.*)$", msg, re.S)
        if nested:  # a cross-field check that names its own sub-key
            key, msg = f"{key}.{nested.group(1)}" if key else nested.group(1), nested.group(2)
        lines.append(f"{source}: {key or '(top level)'}: {msg}")
    return "\n".join(lines)


def validate_params(data: Any, source: str = "params") -> PipelineParams:
    try:
        return PipelineParams.model_validate(data if data is not None else {})
    except ValidationError as err:
        raise PipelineInputError(describe_validation_error(err, source)) from None


def load_params(path: str | Path = PARAMS_FILE) -> PipelineParams:
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
    return validate_params(data, str(path))


def main() -> None:
    """`python -m pipelines.config [params.yaml]`: validate and print the resolved params."""
    import sys

    from pipelines.errors import cli_entry

    cli_entry(lambda: print(load_params(sys.argv[1] if len(sys.argv) > 1 else PARAMS_FILE).to_yaml(), end=""))()


if __name__ == "__main__":
    main()
