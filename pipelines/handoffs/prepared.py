"""What prepare hands on: meta.json, with the modality's preprocessing state as plain data."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, computed_field, model_validator

from pipelines.handoffs.keys import _Handoff


class TableState(BaseModel):
    kind: Literal["table"] = "table"
    features: list[str]  # the source's feature columns the model reads
    mean: list[float]  # per dense input entry
    std: list[float]
    columns: list[dict[str, Any]] | None = None  # each column's type and fitted encoding (None: all numbers)
    target: dict[str, Any] | None = None  # regression: the label's scaling (None: as it is)


class ImageState(BaseModel):
    kind: Literal["image"] = "image"
    input_shape: list[int]
    mean: list[float]
    std: list[float]
    image_size: list[int] | None = None  # [height, width] images are resized to (photos; arrays when asked)
    channels: int | None = None  # 1 or 3 when asked or inferred (photos); None: as the arrays come


class SeriesState(BaseModel):
    kind: Literal["series"] = "series"
    window: int
    season_length: int
    mean: float
    std: float
    horizon: int = 1  # steps forecast at once
    transform: str = "standard"  # standard | log | relative | log_relative
    time_column: str | None = None  # predict reads timestamps from it when the input has it
    freq: str | None = None  # pandas frequency of the training series' timestamps
    column: str | None = None  # the value column of the training file (predict's default)


class TextState(BaseModel):
    kind: Literal["text"] = "text"
    context_length: int
    vocab: list[str]
    unk_id: int = 0


PreprocessingState = Annotated[TableState | ImageState | SeriesState | TextState, Field(discriminator="kind")]
_MODALITY_OF_TASK = {"forecast": "series", "next_word": "text"}


def legacy_preprocessing(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The preprocessing state of a version-1 meta (its `normalization`, `vocab`...), or None if it has none."""
    modality = meta.get("modality") or _MODALITY_OF_TASK.get(meta.get("task", ""))
    norm = meta.get("normalization") or {}
    if modality is None:
        modality = "table" if "features" in meta else "image" if norm.get("per") == "channel" else None
    if modality == "text" and "vocab" in meta:
        return {"kind": "text", "context_length": meta["context_length"], "vocab": meta["vocab"], "unk_id": 0}
    if not norm:
        return None
    if modality == "table":
        return {"kind": "table", "features": meta["features"], "mean": norm["mean"], "std": norm["std"]}
    if modality == "image":
        return {"kind": "image", "input_shape": meta["input_shape"], "mean": norm["mean"], "std": norm["std"]}
    if modality == "series":
        return {
            "kind": "series",
            "window": meta["window"],
            "season_length": meta["season_length"],
            "mean": norm["mean"],
            "std": norm["std"],
        }
    return None


def upgrade_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """A prepared meta of any version as the current layout (`preprocessing` instead of `normalization`)."""
    if "preprocessing" in meta:
        return meta
    state = legacy_preprocessing(meta)
    out = {k: v for k, v in meta.items() if k not in ("normalization", "vocab")}
    return out | ({"preprocessing": state} if state is not None else {})


class PreparedMeta(_Handoff):
    """data/prepared/<dataset>/meta.json: what prepare made, and the fitted preprocessing."""

    dataset: str
    modality: Literal["table", "image", "series", "text"]
    task: str
    input_shape: list[int]
    classes: list[str] | None = None
    sizes: dict[str, int]
    seed: int
    preprocessing: PreprocessingState
    class_counts_train: list[int] | None = None
    # Modality-specific descriptions (None where they do not apply).
    features: list[str] | None = None
    in_features: int | None = None
    label: str | None = None
    window: int | None = None
    season_length: int | None = None
    horizon: int | None = None  # series: the model's outputs (None: 1, files written before horizons)
    transform: str | None = None
    relative: bool | None = None  # series: the network takes each window relative to its last value
    mase_scale: float | None = None  # series: in-sample seasonal-naive MAE of the training part
    freq: str | None = None  # series: pandas frequency of its timestamps
    start: str | None = None  # series: timestamp of its first step
    vocab_size: int | None = None
    unk_id: int | None = None
    context_length: int | None = None
    tokens: dict[str, int] | None = None
    embeddings: list[list[int]] | None = None  # tables: [cardinality, dim] of each embedded category

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        return upgrade_meta(data) if isinstance(data, dict) else data

    @computed_field  # the words themselves live in the text preprocessing state; shown here for readers
    @property
    def vocab(self) -> list[str] | None:
        return self.preprocessing.vocab if isinstance(self.preprocessing, TextState) else None

    def dump(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


# -- train: the summary and each candidate's checkpoint info ------------------------------------
