"""The ingest and prepare sections of a dataset, one class per modality.

A dataset lists only the keys that apply to its data: a table has a label column and no
context_length, a series has a window and no vocabulary. DatasetParams picks the classes by its
`modality` (a discriminated union on the dataset's modality: `tag_sections` marks each section
with it before validation), so a key of another modality is refused as unknown, naming it.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Union, get_args

from pydantic import BaseModel, ConfigDict, Discriminator, Field, GetJsonSchemaHandler, Tag, model_validator

Modality = Literal["table", "image", "text", "series"]
TableTask = Literal["auto", "regression", "binary", "multiclass"]
Missing = Literal["error", "drop", "interpolate"]
TableMissing = Literal["fill", "error", "drop"]
# What a feature column becomes (docs/own-data-tables.md); text and drop both leave the column out.
ColumnType = Literal["number", "log_number", "binary", "category", "date", "text", "drop"]
SeriesTransform = Literal["standard", "log", "relative", "log_relative"]
SOURCE_HELP = (
    "Built-in name (sklearn:<table>, sklearn:digits, python:pydoc-topics, statsmodels:<series>), "
    "a local file, s3://bucket/key or an https:// URL"
)


class Strict(BaseModel):
    """Every section of params.yaml: extra="forbid" turns a misspelled key into an error naming it."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class _Section(Strict):
    modality: ClassVar[str] = ""


# ------------------------------------------------------------------ ingest


class IngestParams(_Section):
    """What every modality's ingest has: where the data comes from."""

    source: str = Field("sklearn:breast_cancer", description=SOURCE_HELP, min_length=1)


class TableIngest(IngestParams):
    modality: ClassVar[str] = "table"
    label: str = Field("target", description="The label column", min_length=1)
    task: TableTask = Field("auto", description="auto infers regression/binary/multiclass from the label")
    missing: TableMissing = Field(
        "fill",
        description="Missing feature values: fill them per column type (numbers with a training statistic and a "
        "missing-indicator, categories with a 'missing' level), refuse them (error) or drop their rows; "
        "rows with a missing label are always dropped and counted, except under error",
    )
    columns: dict[str, ColumnType] = Field(
        default_factory=dict,
        description="Column types that replace the inferred ones, e.g. {age: number, id: drop, city: category}",
    )
    chunk_rows: int = Field(
        65536,
        ge=1,
        description="Rows ingest reads at a time (a CSV or Parquet file is read twice, a chunk at a time): its "
        "memory is bounded by this, not the table's size",
    )


class ImageIngest(IngestParams):
    modality: ClassVar[str] = "image"
    source: str = Field(
        "sklearn:digits",
        description="sklearn:digits, a folder of class subfolders of .png/.jpg images (root/<class>/*.png), "
        "a CSV of path,label (paths relative to it), an MNIST-style IDX folder or file, or a .npz with x and y",
        min_length=1,
    )
    missing: Literal["error", "drop"] = Field(
        "error",
        description="A file that is not a readable image (or a CSV row without path or label): refuse it "
        "naming it, or skip it and count it",
    )


class TextIngest(IngestParams):
    modality: ClassVar[str] = "text"
    source: str = Field("python:pydoc-topics", description=SOURCE_HELP, min_length=1)


class SeriesIngest(IngestParams):
    modality: ClassVar[str] = "series"
    source: str = Field("statsmodels:sunspots", description=SOURCE_HELP, min_length=1)
    column: str = Field("value", description="The value column of a CSV/Parquet series", min_length=1)
    missing: Missing = Field("error", description="Missing values: refuse, drop them, or interpolate linearly")
    time_column: str | None = Field(
        None,
        description="A column of timestamps (CSV/Parquet): parsed as dates, frequency inferred, unsorted or "
        "repeated timestamps refused; forecasts are then printed with their timestamps",
    )


# ------------------------------------------------------------------ prepare


class PrepareParams(_Section):
    """What every modality's prepare has: the split."""

    seed: int = Field(42, ge=0)
    val_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)


class TablePrepare(PrepareParams):
    modality: ClassVar[str] = "table"
    normalize: bool = Field(True, description="Standardize inputs with statistics of the training split only")
    max_onehot: int = Field(
        10, ge=0, description="A category with at most this many training levels is one-hot; more: an embedding"
    )
    fill: Literal["median", "mean"] | float = Field(
        "median", description="Missing numbers: the training median, mean, or this constant"
    )
    target_scaling: Literal["standard", "log", "none"] = Field(
        "standard",
        description="Regression targets: standardized, log1p then standardized, or as they are (training split only)",
    )
    chunk_rows: int = Field(
        65536,
        ge=1,
        description="Rows prepare reads and encodes at a time: its memory is bounded by this, not the table's size",
    )


Side = Annotated[int, Field(ge=1, le=4096)]


class ImagePrepare(PrepareParams):
    modality: ClassVar[str] = "image"
    normalize: bool = Field(True, description="Standardize pixels per channel with the training split's statistics")
    image_size: Side | Annotated[list[Side], Field(min_length=2, max_length=2)] | None = Field(
        None,
        description="Resize every image to [height, width] (an int: a square); null keeps the source's size "
        "(photos of different sizes need one)",
    )
    channels: Literal[1, 3] | None = Field(
        None, description="1 (grayscale) or 3 (RGB); null: 1 when every image is grayscale, else 3"
    )
    chunk_images: int | None = Field(
        None,
        ge=1,
        description="Photos prepare decodes, resizes and writes at a time: its memory is bounded by this, not the "
        "folder's size; null: as many as take 16 MiB as float32 at the prepared size",
    )

    @property
    def size(self) -> tuple[int, int] | None:
        """image_size as (height, width), or None."""
        if self.image_size is None:
            return None
        side = self.image_size
        return (side, side) if isinstance(side, int) else (side[0], side[1])


class TextPrepare(PrepareParams):
    modality: ClassVar[str] = "text"
    context_length: int = Field(12, ge=1, le=512, description="Words of context that predict the next word")
    max_vocab: int = Field(2000, ge=10, description="Most frequent training words kept; the rest become <unk>")
    min_count: int = Field(2, ge=1, description="A word needs this many training occurrences to be in the vocabulary")
    max_tokens: int | None = Field(None, ge=100, description="Use only the first N tokens of the corpus")


class SeriesPrepare(PrepareParams):
    modality: ClassVar[str] = "series"
    normalize: bool = Field(True, description="Standardize values with statistics of the training part only")
    window: int = Field(30, ge=2, le=10_000, description="Past steps that predict the next ones")
    season_length: int = Field(12, ge=1, description="Period of the seasonal-naive and exponential-smoothing baselines")
    horizon: int = Field(1, ge=1, le=1000, description="Steps forecast at once from each origin (the model's outputs)")
    transform: SeriesTransform = Field(
        "standard",
        description="standard: one mean/std; log: log, then mean/std (positive series with multiplicative "
        "seasonality); relative / log_relative: the same, and each window is taken relative to its last value "
        "(the network forecasts the change from the forecast origin: trends, levels never seen in training)",
    )

    @model_validator(mode="after")
    def _season_in_window(self) -> SeriesPrepare:
        if self.season_length > self.window:
            raise ValueError(f"season_length: {self.season_length} must not exceed window ({self.window})")
        return self


SECTIONS: dict[str, dict[str, type[_Section]]] = {
    "ingest": {c.modality: c for c in (TableIngest, ImageIngest, TextIngest, SeriesIngest)},
    "prepare": {c.modality: c for c in (TablePrepare, ImagePrepare, TextPrepare, SeriesPrepare)},
}
MODALITIES = get_args(Modality)
assert all(tuple(classes) == MODALITIES for classes in SECTIONS.values()), "a section class per modality"


class _Tagged(dict):
    """A section's raw keys, marked with the modality of the dataset they belong to (not a key itself)."""

    modality = "table"


def _tag_of(value: Any) -> str:
    return getattr(value, "modality", None) or "table"


class _AnyOfInJsonSchema:
    """JSON schema: anyOf, not oneOf. The sections of several modalities share their keys (and a section's
    tag is the dataset's modality, outside it), so the defaults match more than one and oneOf would refuse
    them; the Prefect server checks anyOf, and the flow's own validation then applies the modality's class."""

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        schema = handler(core_schema)
        if "oneOf" in schema:
            schema["anyOf"] = schema.pop("oneOf")
        return schema


def _union(section: str) -> Any:
    members = tuple(Annotated[cls, Tag(modality)] for modality, cls in SECTIONS[section].items())
    return Annotated[Union[members], Discriminator(_tag_of), _AnyOfInJsonSchema()]  # noqa: UP007 (built at run time)


IngestSection = _union("ingest")
PrepareSection = _union("prepare")


def tag_sections(data: Any) -> Any:
    """Mark a raw dataset's ingest and prepare with its modality (absent sections get the modality's defaults).

    An unknown modality is left alone: the modality field reports it.
    """
    if not isinstance(data, dict):
        return data
    modality = data.get("modality", "table")
    if modality not in MODALITIES:
        return data
    data = dict(data)
    for section in ("ingest", "prepare"):
        raw = data.get(section, {})
        if isinstance(raw, dict):
            data[section] = _Tagged(raw)
            data[section].modality = modality
        elif isinstance(raw, _Section) and raw.modality != modality:
            raise ValueError(f"{section}: {type(raw).__name__} holds {raw.modality} settings, not {modality}")
    return data
