"""The LSTM and GRU families: next-word prediction (token ids in) and forecasting (values in).

nn.LSTM / nn.GRU run the whole sequence in one call (cuDNN kernels on a GPU),
never a Python loop over time steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from models.candidate import Activation, CandidateBase
from models.catalogue import Builder, register_family

if TYPE_CHECKING:
    from models.networks import RecurrentNet


class RnnCandidate(CandidateBase):
    family: Literal["lstm", "gru"]
    hidden_size: int = Field(64, ge=1)
    num_layers: int = Field(1, ge=1, le=8)
    embedding_dim: int = Field(32, ge=1, description="Text: size of the word embedding")
    activation: Activation = Field("tanh", description="Activation of the dense head after the recurrent layers")

    def architecture(self, meta: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "embedding_dim": self.embedding_dim,
            "vocab_size": meta.get("vocab_size"),  # text: token ids are embedded; series: None, values in
            "relative": bool(meta.get("relative")),  # series: windows taken relative to their last value
        }


def _builder(cell: str) -> Builder:
    def build(
        *,
        input_shape: list[int],
        out_features: int,
        hidden_size: int,
        num_layers: int,
        dropout: float,
        vocab_size: int | None,
        embedding_dim: int,
        activation: str,
        relative: bool = False,
    ) -> RecurrentNet:
        from models.networks import RecurrentNet

        # input_shape is [sequence length]: any length runs, so it only has to be one-dimensional.
        if len(input_shape) != 1:
            raise ValueError(f"{cell}: input_shape must be [sequence length], got {input_shape}")
        return RecurrentNet(
            cell, out_features, hidden_size, num_layers, dropout, vocab_size, embedding_dim, activation, relative
        )

    return build


TASKS = ("next_word", "forecast")
register_family("lstm", candidate=RnnCandidate, modalities=("text", "series"), tasks=TASKS)(_builder("lstm"))
register_family("gru", candidate=RnnCandidate, modalities=("text", "series"), tasks=TASKS)(_builder("gru"))
