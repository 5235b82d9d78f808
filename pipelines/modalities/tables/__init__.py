"""Tables (CSV, Parquet, built-in tables) for the FNN: regression, binary, multi-class.

columns.py   column types (inferred or from ingest.columns) and the data profile
ingest.py    read, type, handle gaps, profile -> data/raw/<ds>/table.parquet, profile.json: in two passes of
             chunks (ingest_scan.py: what the first pass gathers, merged chunk by chunk)
encoding.py  TablePreprocessor: the one preprocessing object (prepare, evaluate and predict)
prepare.py   split, fit on the training rows, shards: in chunks (fit_stats.py: statistics merged chunk by chunk)
"""

from pipelines.modalities.tables.encoding import TablePreprocessor
from pipelines.modalities.tables.ingest import RAW_TABLE, ingest
from pipelines.modalities.tables.prepare import prepare

__all__ = ["RAW_TABLE", "TablePreprocessor", "ingest", "prepare"]
