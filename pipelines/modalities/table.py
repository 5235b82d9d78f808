"""Kept for imports written before the tables package: everything lives in pipelines/modalities/tables/."""

from pipelines.modalities.tables import RAW_TABLE, TablePreprocessor, infer_task, ingest, prepare, validate_table

__all__ = ["RAW_TABLE", "TablePreprocessor", "infer_task", "ingest", "prepare", "validate_table"]
