"""A fifth model family, registered in this file and nowhere else, reaches the catalogue, the config
schema and the Prefect form.

Registration may come after pipelines.config (and the flow) were imported: the catalogue tells the
config, which rebuilds its schema classes in place (pipelines.config.rebuild_schema).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import pytest
import torch
from prefect.utilities.callables import parameter_schema
from pydantic import Field
from torch import nn

import models
from models.candidate import CandidateBase
from models.catalogue import register_family, unregister_family
from pipelines.config import validate_params
from pipelines.errors import PipelineInputError
from pipelines.orchestration.flow import training_pipeline  # imported before the family exists, on purpose


class LinearCandidate(CandidateBase):
    """One linear layer: a logistic/linear regression on the flattened input."""

    family: Literal["linear"]
    bias: bool = Field(True, description="Learn an intercept")

    def architecture(self, meta: Mapping[str, Any]) -> dict[str, Any]:
        return {"bias": self.bias}

    def model_spec(self, meta: Mapping[str, Any], out_features: int) -> dict[str, Any]:
        spec = super().model_spec(meta, out_features)
        del spec["activation"]  # a single layer has no hidden activation
        return spec


def build_linear(*, input_shape: list[int], out_features: int, dropout: float, bias: bool) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(math.prod(input_shape), out_features, bias=bias))


@pytest.fixture
def linear_family() -> Iterator[None]:
    register_family("linear", candidate=LinearCandidate, modalities=("table",), tasks=("regression", "binary"))(
        build_linear
    )
    try:
        yield
    finally:
        unregister_family("linear")  # the other tests see the four built-in families only


def params_with(candidate: dict, modality: str = "table") -> dict:
    dataset = {"modality": modality, "train": {"candidates": {"a": candidate}}, "register": {"model_name": "m"}}
    return {"datasets": {"d": dataset}}


def test_it_is_in_the_catalogue_and_builds_from_its_config(linear_family):
    assert models.list_models() == ["cnn", "fnn", "gru", "linear", "lstm"]
    assert models.families_for("table") == ("fnn", "linear")
    cand = LinearCandidate(family="linear", bias=False)
    spec = cand.model_spec({"input_shape": [3]}, 1)
    net = models.create_model("linear", **spec)
    assert net(torch.ones(2, 3)).shape == (2, 1) and net[2].bias is None


def test_the_config_schema_takes_it_and_names_a_wrong_key(linear_family):
    params = validate_params(params_with({"family": "linear", "bias": False, "lr": 0.01}))
    cand = params.datasets["d"].train.candidates["a"]
    assert isinstance(cand, LinearCandidate) and cand.bias is False and cand.lr == 0.01

    with pytest.raises(PipelineInputError) as err:
        validate_params(params_with({"family": "linear", "biass": False}), "params.yaml")
    assert "params.yaml: datasets.d.train.candidates.a.biass: unknown key" in str(err.value)
    with pytest.raises(PipelineInputError, match="linear cannot learn from image data"):
        validate_params(params_with({"family": "linear"}, modality="image"))


def test_the_prefect_form_offers_it(linear_family):
    defs = parameter_schema(training_pipeline.fn).model_dump()["definitions"]
    union = defs["DatasetTrainParams"]["properties"]["candidates"]["additionalProperties"]
    assert union["discriminator"]["mapping"]["linear"] == "#/definitions/LinearCandidate"
    assert {"$ref": "#/definitions/LinearCandidate"} in union["oneOf"]
    linear = defs["LinearCandidate"]
    assert linear["additionalProperties"] is False and {"bias", "lr", "dropout"} <= set(linear["properties"])


def test_unregistered_it_is_refused_again(linear_family):
    unregister_family("linear")
    try:
        with pytest.raises(PipelineInputError, match=r"candidates\.a\.family: Input tag 'linear'"):
            validate_params(params_with({"family": "linear"}))
    finally:  # the fixture unregisters it once more
        register_family("linear", candidate=LinearCandidate, modalities=("table",), tasks=("binary",))(build_linear)
