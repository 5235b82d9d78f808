"""One module per kind of data: how it is read and validated (ingest), turned into arrays (prepare),
and the preprocessing object fitted on the training split that prepare, evaluate and predict share.

Each module has
    ingest(params: IngestParams, out_dir: Path) -> dict          raw files + what was read
    prepare(raw_dir, ingest, params, info) -> (splits, meta)     arrays per split + meta.json content
    <Kind>Preprocessor                                           fit(train), transform(x), inverse(y),
                                                                 state (plain JSON data) / from_state(state),
                                                                 read_inputs(source, column) for predict
                                                                 (tables also read_input_chunks(source, rows))
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Protocol

import numpy as np
import pandas as pd


class Preprocessor(Protocol):
    kind: str

    def transform(self, x: Any) -> Any: ...

    def inverse(self, y: Any) -> Any: ...

    @property
    def state(self) -> dict: ...

    def read_inputs(self, source: str, column: str | None = None) -> tuple[np.ndarray, pd.DataFrame]: ...


def module_for(modality: str) -> ModuleType:
    from pipelines.modalities import image, series, tables, text

    return {"table": tables, "image": image, "text": text, "series": series}[modality]


def preprocessor_from_state(state: dict) -> Preprocessor:
    """Rebuild a fitted preprocessing object from its plain-data state (meta.json, a checkpoint's info)."""
    from pipelines.modalities.image import ImagePreprocessor
    from pipelines.modalities.series import SeriesPreprocessor
    from pipelines.modalities.tables import TablePreprocessor
    from pipelines.modalities.text import TextPreprocessor

    kinds = {cls.kind: cls for cls in (TablePreprocessor, ImagePreprocessor, SeriesPreprocessor, TextPreprocessor)}
    if state.get("kind") not in kinds:
        raise ValueError(f"preprocessing state of unknown kind {state.get('kind')!r}; known: {', '.join(kinds)}")
    return kinds[state["kind"]].from_state(state)
