"""The one typed schema for params.yaml.

The same model is the Prefect flow's parameter type (so the UI renders a
validated form) and what every stage reads, so a bad value is refused in the
same words whichever front door it came through: params.yaml, `dvc exp run -S`,
the CLI or the Prefect UI.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipelines.errors import PipelineInputError
from pipelines.paths import PARAMS_FILE

Task = Literal["auto", "regression", "binary", "multiclass"]
Activation = Literal["relu", "leaky_relu", "tanh", "sigmoid"]
Loss = Literal["auto", "mse", "bce", "cce"]
OptimizerName = Literal["sgd", "adam", "rmsprop"]


class Strict(BaseModel):
    # extra="forbid" is what turns a misspelled key into an error naming it.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class IngestParams(Strict):
    source: str = Field(
        "sklearn:breast_cancer",
        description="sklearn:<name> (breast_cancer, wine, iris, diabetes), a CSV/Parquet path, s3://bucket/key or https:// URL",
        min_length=1,
    )
    label: str = Field("target", description="Name of the label column", min_length=1)
    task: Task = Field("auto", description="auto infers regression/binary/multiclass from the label column")
    missing: Literal["error", "drop"] = Field("error", description="What to do with rows that have missing values")


class PrepareParams(Strict):
    seed: int = Field(42, ge=0)
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)
    normalize: bool = Field(True, description="Standardize features with statistics of the training split only")


class CandidateParams(Strict):
    """One model to train; the register stage keeps the best candidate."""

    family: Literal["fnn"] = "fnn"
    hidden: list[int] = Field(default_factory=lambda: [64, 32], min_length=1)
    activation: Activation = "relu"
    dropout: float = Field(0.1, ge=0, lt=1)
    loss: Loss = Field("auto", description="auto: mse for regression, bce for binary, cce for multi-class")
    optimizer: OptimizerName = "adam"
    lr: float = Field(1e-3, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum / RMSprop momentum")

    @model_validator(mode="after")
    def _hidden_positive(self) -> "CandidateParams":
        if any(h <= 0 for h in self.hidden):
            raise ValueError(f"hidden sizes must be positive integers, got {self.hidden}")
        return self


class EarlyStoppingParams(Strict):
    monitor: str = Field("val/loss", min_length=1)
    mode: Literal["min", "max"] = "min"
    patience: int = Field(5, ge=1)


class TrainParams(Strict):
    seed: int = Field(42, ge=0)
    epochs: int = Field(30, ge=1, le=10_000)
    batch_size: int = Field(64, ge=1, description="Global batch size, split across workers")
    num_workers: int = Field(2, ge=1, description="Ray Train workers (processes)")
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    checkpoints_to_keep: int = Field(2, ge=1)
    storage_path: str = Field("data/ray_results", description="Ray Train checkpoints: a local/shared path or s3://")
    early_stopping: EarlyStoppingParams = Field(default_factory=EarlyStoppingParams)
    candidates: dict[str, CandidateParams] = Field(
        default_factory=lambda: {
            "fnn-relu": CandidateParams(activation="relu"),
            "fnn-tanh": CandidateParams(activation="tanh"),
        },
        min_length=1,
    )

    @model_validator(mode="after")
    def _names_and_batch(self) -> "TrainParams":
        for name in self.candidates:
            if not name.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"candidate name {name!r} may hold only letters, digits, '-' and '_'")
        if self.batch_size < self.num_workers:
            raise ValueError(
                f"batch_size ({self.batch_size}) is the global batch and must be at least num_workers ({self.num_workers})"
            )
        return self


class EvaluateParams(Strict):
    batch_size: int = Field(1024, ge=1)


class RegisterParams(Strict):
    registry: str = Field("data/registry", description="Model registry location (local path)")
    model_name: str = Field("tabular-fnn", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# BaseModel inherits ABCMeta.register; a section named "register" shadows it
# harmlessly, so the warning pydantic raises about it is silenced here.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "register"')

    class PipelineParams(Strict):
        ingest: IngestParams = Field(default_factory=IngestParams)
        prepare: PrepareParams = Field(default_factory=PrepareParams)
        train: TrainParams = Field(default_factory=TrainParams)
        evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
        register: RegisterParams = Field(default_factory=RegisterParams)

        def to_yaml(self) -> str:
            return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def describe_validation_error(err: ValidationError, source: str) -> str:
    """One line per problem, each naming the dotted key, e.g. train.candidates.fnn-relu.lr."""
    lines = []
    for problem in err.errors():
        key = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        msg = problem["msg"]
        if problem["type"] == "extra_forbidden":
            msg = "unknown key (misspelled?)"
        lines.append(f"{source}: {key}: {msg}")
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
        raise PipelineInputError(f"{path}: expected a mapping of sections (ingest, prepare, ...), got {type(data).__name__}")
    return validate_params(data, str(path))


def main() -> None:
    """`python -m pipelines.config [params.yaml]`: validate and print the resolved params."""
    import sys

    from pipelines.errors import cli_entry

    cli_entry(lambda: print(load_params(sys.argv[1] if len(sys.argv) > 1 else PARAMS_FILE).to_yaml(), end=""))()


if __name__ == "__main__":
    main()
