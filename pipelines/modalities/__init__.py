"""One module per kind of data: how it is read and validated (ingest) and turned into arrays (prepare).

Each module has
    ingest(params: IngestParams, out_dir: Path) -> dict          raw files + what was read
    prepare(raw_dir, ingest, params) -> (splits, meta)           arrays per split + meta.json content
"""

from __future__ import annotations

from types import ModuleType


def module_for(modality: str) -> ModuleType:
    from pipelines.modalities import image, series, table, text

    return {"table": table, "image": image, "text": text, "series": series}[modality]
