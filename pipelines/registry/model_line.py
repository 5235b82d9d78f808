"""One model name, one kind of model: the signature every version of a name shares.

A model name (`register.model_name`) is a line of versions that replace each other behind an alias, so
every version must answer the same question on the same inputs: the same task, the same classes, and
(tables) the same input columns with the same types. A run that would register something else under
the name is refused before it trains (prepare), and again at register, naming the setting to change.

The signature is computed from the prepared meta (data/prepared/<ds>/meta.json, also inside every
checkpoint) and stored on the card, so checking a name costs one card read.
"""

from __future__ import annotations

from typing import Any

from pipelines.config import DatasetParams
from pipelines.errors import PipelineInputError
from pipelines.handoffs import PreparedMeta
from pipelines.handoffs.prepared import SeriesState, TableState

# The signature's keys that make a model line; `input_shape` only decides whether a champion can be
# scored on another version's data (pipelines/evaluation/champion.py), not what a version may be.
LINE_KEYS = ("modality", "task", "classes", "inputs", "outputs")


class ModelLineMismatch(PipelineInputError):
    """A run would register a model of another task, class set or input schema under an existing name (exit 2)."""


def signature_of(meta: PreparedMeta) -> dict[str, Any]:
    """What every version of a model name must share, from a prepared meta."""
    signature: dict[str, Any] = {"modality": meta.modality, "task": meta.task, "input_shape": list(meta.input_shape)}
    if meta.classes is not None:
        signature["classes"] = list(meta.classes)
    state = meta.preprocessing
    if isinstance(state, TableState):
        columns = state.columns or [{"name": f, "type": "number"} for f in state.features]
        signature["inputs"] = [{"name": c["name"], "type": c["type"]} for c in columns]
    if isinstance(state, SeriesState):
        signature["outputs"] = state.horizon  # forecast steps: a client reads that many values back
    return signature


def same_line(a: dict[str, Any], b: dict[str, Any], keys: tuple[str, ...] = LINE_KEYS) -> bool:
    return all(a.get(key) == b.get(key) for key in keys)


def declared_signature(ds: DatasetParams) -> dict[str, Any]:
    """The part of a signature the params state before any data is read: the modality, a table's task when
    set (not `auto`), a series' horizon. The rest (inferred task, classes, columns) is known at prepare."""
    declared: dict[str, Any] = {"modality": ds.modality}
    task = getattr(ds.ingest, "task", "auto")
    if task != "auto":
        declared["task"] = task
    horizon = getattr(ds.prepare, "horizon", None)
    if horizon is not None:
        declared["outputs"] = horizon
    return declared


def describe(signature: dict[str, Any]) -> str:
    """'binary of a table with 30 columns (classes: 0, 1)': what a signature holds, for one line of text."""
    task = signature.get("task")
    modality = signature.get("modality", "?")
    what = f"{task} on {modality}s" if task else f"a model of {modality}s"
    if signature.get("inputs") is not None:
        inputs = signature["inputs"]
        shown = ", ".join(f"{c['name']}:{c['type']}" for c in inputs[:4]) + (", ..." if len(inputs) > 4 else "")
        what = f"{task} on a table of {len(inputs)} columns ({shown})"
    if signature.get("classes") is not None:
        classes = signature["classes"]
        what += f", classes {', '.join(map(str, classes[:6]))}{', ...' if len(classes) > 6 else ''}"
    if signature.get("outputs") is not None:
        what += f", {signature['outputs']}-step forecasts"
    return what


def check_line(
    name: str, held: dict[str, Any] | None, held_versions: str, wanted: dict[str, Any], dataset: str
) -> None:
    """Refuse `wanted` under `name` when the name's versions (`held`, their signature) are another kind of model.

    `wanted` may be partial (declared_signature): then only the keys it has are compared."""
    keys = tuple(key for key in LINE_KEYS if key in wanted) if "input_shape" not in wanted else LINE_KEYS
    if held is None or same_line(held, wanted, keys):
        return
    raise ModelLineMismatch(
        f"model name '{name}' holds {held_versions} of {describe(held)}; this run would register "
        f"{describe(wanted)}: set datasets.{dataset}.register.model_name to another name "
        f"(e.g. -S datasets.{dataset}.register.model_name={name}-{wanted.get('task', 'new')})"
    )
