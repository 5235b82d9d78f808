"""Numeric series for forecasting with the LSTM/GRU: the last `window` steps predict the next `horizon` steps.

reading.py     built-in series, a CSV/Parquet value column and time column, missing values (ingest)
windows.py     sliding windows and the split (prepare); the series rebuilt from its windows (evaluate)
preprocess.py  SeriesPreprocessor: the (log) transform and scaling prepare, evaluate and predict share
"""

from pipelines.modalities.series.preprocess import SeriesPreprocessor
from pipelines.modalities.series.reading import RAW_SERIES, STATSMODELS_SERIES, ingest
from pipelines.modalities.series.windows import prepare

__all__ = ["RAW_SERIES", "STATSMODELS_SERIES", "SeriesPreprocessor", "ingest", "prepare"]
