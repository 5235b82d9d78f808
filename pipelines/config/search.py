"""Hyperparameter search params: the knobs of one candidate searched with Ray Tune + ASHA."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from pipelines.config.modalities import Strict


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
