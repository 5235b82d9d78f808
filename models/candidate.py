"""What every model family's config shares: the loss, the optimizer and its schedule, activation and dropout.

A family subclasses `CandidateBase` with its own knobs and a `family: Literal[...]` tag, and says how
its knobs become its builder's keyword arguments (`architecture`). pydantic only, no torch: the
config schema is built from these classes before any framework is imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from models.class_weights import ClassWeighting

Activation = Literal["relu", "leaky_relu", "tanh", "sigmoid"]
Loss = Literal["auto", "mse", "bce", "cce"]
OptimizerName = Literal["sgd", "adam", "rmsprop"]


def check_positive(values: list[int], key: str) -> None:
    if any(v <= 0 for v in values):
        raise ValueError(f"{key}: sizes must be positive integers, got {values}")


class CandidateBase(BaseModel):
    """What every model family shares: the loss and the optimizer."""

    # extra="forbid" is what turns a misspelled key into an error naming it.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    family: str
    loss: Loss = Field(
        "auto", description="auto: mse for regression/forecast, bce for binary, cce for multi-class/next word"
    )
    # Beside the loss it weighs: one run can train a weighted and an unweighted candidate side by side.
    class_weights: ClassWeighting | None = Field(
        None, description="none | balanced for this candidate's BCE/CCE loss; null: the dataset's train.class_weights"
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

    def architecture(self, meta: Mapping[str, Any]) -> dict[str, Any]:
        """The family's own builder arguments (beyond the shared ones in `model_spec`)."""
        raise NotImplementedError(f"{type(self).__name__} must say how its knobs become builder arguments")

    def model_spec(self, meta: Mapping[str, Any], out_features: int) -> dict[str, Any]:
        """Plain keyword arguments for `models.create_model`: they travel to workers and into checkpoints.

        `meta` is the prepared data's description (input_shape, and vocab_size for text).
        """
        spec = {
            "family": self.family,
            "input_shape": meta["input_shape"],
            "out_features": out_features,
            "activation": self.activation,
            "dropout": self.dropout,
        }
        spec.update(self.architecture(meta))
        return spec
