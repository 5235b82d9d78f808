"""The table's one preprocessing object: typed columns -> the FNN's input vector, fitted on the training split.

Input layout, per row (float32):  [dense entries | embedding codes]
    dense   numbers (log_number: sign(x)*log1p(|x|)), binary 0/1, date parts (year, month, day of week,
            day of year), each followed by a 0/1 missing indicator when the column had gaps at ingest;
            one-hot categories (at most prepare.max_onehot training levels). Numbers and date parts are
            standardized with the training split's mean and std; 0/1 entries are left as they are.
    codes   one integer code per high-cardinality category (the FNN embeds them: meta `embeddings`).
Every category has an unknown level (code 0): a value not seen in training, at evaluate and predict time
alike. A category with gaps has a "<missing>" level. Gaps in numbers are filled with a training statistic.

The state is plain JSON data (never pickle): it travels in meta.json and inside registered checkpoints.
A state written before typed columns (features, mean, std only) reads as all-number columns without fills.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import pandas as pd

from pipelines.errors import PipelineInputError
from pipelines.modalities.tables.apply_columns import MISSING, UNKNOWN, Columns, encode_columns
from pipelines.modalities.tables.columns import convert
from pipelines.modalities.tables.entries import DATE_PARTS, dense_entries, embedding_dim, target_values
from pipelines.modalities.tables.fit_stats import EntryStats, Moments, two_passes


class TablePreprocessor:
    """Typed table columns -> standardized float32 inputs; regression targets scaled and restored (inverse)."""

    kind = "table"

    def __init__(
        self,
        features: list[str],
        mean: list[float] | None = None,
        std: list[float] | None = None,
        columns: list[dict[str, Any]] | None = None,
        target: dict[str, Any] | None = None,
    ):
        self.features, self.mean, self.std = list(features), mean, std
        # A state from before typed columns: every feature a number, no fill (a gap is refused).
        self.columns = columns if columns is not None else [{"name": f, "type": "number"} for f in self.features]
        self.target = target

    # ---------------------------------------------------------------- fitting (training rows only)

    def fit(
        self,
        train: pd.DataFrame,
        types: dict[str, str],
        missing: dict[str, int],
        binary: dict[str, list[str]],
        normalize: bool = True,
        fill: str | float = "median",
        max_onehot: int = 10,
    ) -> TablePreprocessor:
        """Learn fills, levels and scaling from the training rows held in memory (one chunk: `fit_chunks`)."""
        return self.fit_chunks(lambda: [train], types, missing, binary, normalize, fill, max_onehot)

    def fit_chunks(
        self,
        chunks: Callable[[], Iterable[pd.DataFrame]],
        types: dict[str, str],
        missing: dict[str, int],
        binary: dict[str, list[str]],
        normalize: bool = True,
        fill: str | float = "median",
        max_onehot: int = 10,
    ) -> TablePreprocessor:
        """Learn fills, levels and scaling from the training rows, read in chunks (each call of `chunks()` reads
        them all again, in order): one pass, or two for median fills (`fit_stats`). `types`, `missing` and
        `binary` come from ingest."""
        self.columns = []
        numeric: list[tuple[dict[str, Any], list[EntryStats]]] = []
        seen: dict[str, set] = {}
        for name, kind in types.items():
            spec: dict[str, Any] = {"name": name, "type": kind}
            if kind == "category":
                seen[name] = set()
            else:
                if kind == "binary":
                    spec["positive"], spec["negative"] = binary[name]
                spec["indicator"] = bool(missing.get(name))
                width = len(DATE_PARTS) if kind == "date" else 1
                numeric.append((spec, [EntryStats(median=fill == "median") for _ in range(width)]))
            self.columns.append(spec)

        def entries(chunk: pd.DataFrame) -> list[np.ndarray]:
            out: list[np.ndarray] = []
            for spec, _ in numeric:
                out += list(dense_entries(spec, convert("train", spec["name"], spec["type"], chunk[spec["name"]])).T)
            return out

        def levels_of(chunk: pd.DataFrame) -> None:
            for name, values in seen.items():
                values.update(v for v in convert("train", name, "category", chunk[name]) if v is not None)

        two_passes(chunks, entries, [stat for _, stats in numeric for stat in stats], first=levels_of)
        for spec in self.columns:
            if spec["type"] == "category":
                levels = sorted(seen[spec["name"]])
                spec["levels"] = [UNKNOWN] + ([MISSING] if missing.get(spec["name"]) else []) + levels
                spec["embedding"] = len(levels) > max_onehot
        for spec, stats in numeric:
            spec["fill"] = [stat.fill(fill) for stat in stats]
        self._fit_scaling(dict((spec["name"], stats) for spec, stats in numeric), normalize)
        return self

    def _fit_scaling(self, stats: dict[str, list[EntryStats]], normalize: bool) -> None:
        """Mean and std of each standardized dense entry (filled, as float32); 0 and 1 for the others."""
        mean: list[float] = []
        std: list[float] = []
        for spec, scaled in zip(self.columns, self._column_scaled(), strict=True):
            if spec["type"] == "category":
                width = 0 if spec["embedding"] else len(spec["levels"])
                mean, std = mean + [0.0] * width, std + [1.0] * width
                continue
            for stat, value in zip(stats[spec["name"]], spec["fill"], strict=True):
                moments = stat.filled(value)
                mean.append(moments.mean if scaled and normalize else 0.0)
                std.append(moments.std if scaled and normalize else 1.0)
            if spec.get("indicator"):
                mean, std = mean + [0.0], std + [1.0]
        std_arr = np.asarray(std)
        std_arr = np.where(std_arr < 1e-8, 1.0, std_arr)  # constant columns stay finite
        self.mean = np.asarray(mean, np.float32).tolist()  # float32 values: exact through JSON
        self.std = std_arr.astype(np.float32).tolist()

    def _column_scaled(self) -> list[bool]:
        """Per column: whether its dense entries are standardized (numbers and date parts; not 0/1 entries)."""
        return [spec["type"] not in ("category", "binary") for spec in self.columns]

    def fit_target(self, y: np.ndarray, scaling: str) -> np.ndarray:
        """Regression: learn the target's scaling on the training rows; returns them scaled."""
        moments = Moments()
        moments.add(target_values(y, scaling))
        self.fit_target_moments(moments, scaling)
        return self.scale_target(y)

    def fit_target_moments(self, moments: Moments, scaling: str) -> None:
        """Regression: the target's scaling from the moments of `target_values` over the training rows."""
        mean, std = (moments.mean, moments.std) if scaling != "none" else (0.0, 1.0)
        self.target = {"scaling": scaling, "mean": mean, "std": std if std > 1e-12 else 1.0}

    def scale_target(self, y: np.ndarray) -> np.ndarray:
        """Label values (any rows) in the scale the network learns."""
        t = self.target
        y = np.asarray(y, np.float64)
        if t["scaling"] == "log":
            y = np.log1p(np.maximum(y, -1 + 1e-12))
        return ((y - t["mean"]) / t["std"]).astype(np.float32).reshape(-1, 1)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """Regression outputs and targets back in the label's units (identity for classes and old states)."""
        t = self.target
        if not t:
            return y
        out = np.asarray(y, np.float64) * t["std"] + t["mean"]
        return np.expm1(out) if t["scaling"] == "log" else out

    # ---------------------------------------------------------------- applying (any rows)

    def transform(self, frame: pd.DataFrame, source: str = "input") -> np.ndarray:
        """Rows of the typed table (or a user's raw table) -> (rows, entries + codes) float32."""
        return self.transform_columns(frame, source)

    def transform_columns(self, columns: Columns, source: str = "input") -> np.ndarray:
        """The feature columns -> (rows, entries + codes) float32, column by column: each a table's Series or
        a plain list of values (the online endpoint's JSON rows taken apart: no DataFrame built).

        A list of plain numbers goes straight to NumPy (`columns.number_array`); any other column goes through
        the conversion a file's column does, with the same fills, levels and messages naming the row."""
        dense, codes = encode_columns(self.columns, columns, source)
        mean, std = np.asarray(self.mean, np.float32), np.asarray(self.std, np.float32)
        return np.hstack([((dense - mean) / std).astype(np.float32), codes])

    def unseen(self, frame: pd.DataFrame) -> dict[str, int]:
        """Per category column, how many values of `frame` were not seen in training."""
        out = {}
        for spec in self.columns:
            if spec["type"] == "category":
                values = convert("input", spec["name"], "category", frame[spec["name"]])
                n = sum(v is not None and v not in spec["levels"] for v in values)
                if n:
                    out[spec["name"]] = n
        return out

    def read_inputs(self, source: str, column: str | None = None) -> tuple[np.ndarray, pd.DataFrame]:
        """A user's table (CSV/Parquet) with the original feature columns -> model inputs and the table.

        Strings, blanks and categories never seen in training are handled as in training (fills, unknown level).
        """
        from pipelines.modalities.sources import fetched, read_table

        with fetched(source) as local:
            table = read_table(local, source)
        x = self._inputs(table, source)
        self._say_unseen(self.unseen(table))
        return x, table

    def read_input_chunks(self, source: str, chunk_rows: int) -> Iterator[tuple[np.ndarray, pd.DataFrame]]:
        """read_inputs, `chunk_rows` rows at a time (tables larger than memory): the same inputs and rows; each chunk
        is indexed by its rows in the file, so an error names the row of the file (`columns.row_number`)."""
        from pipelines.modalities.sources import fetched
        from pipelines.modalities.tables.chunks import read_table_chunks

        unseen: Counter[str] = Counter()
        with fetched(source) as local:
            for table in read_table_chunks(local, source, chunk_rows):
                yield self._inputs(table, source), table
                unseen.update(self.unseen(table))
        self._say_unseen(dict(unseen))

    def _inputs(self, table: pd.DataFrame, source: str) -> np.ndarray:
        """The model's inputs of the table's rows (errors name rows by the table's index)."""
        table.rename(columns=lambda c: str(c).strip(), inplace=True)
        absent = [c for c in self.features if c not in table.columns]
        if absent:
            raise PipelineInputError(
                f"{source}: missing feature column(s) {', '.join(absent)} that the model was trained on"
            )
        return self.transform(table, source)

    @staticmethod
    def _say_unseen(unseen: dict[str, int]) -> None:
        for name, n in unseen.items():
            print(f"predict: column '{name}': {n} value(s) not seen in training -> the unknown level")

    # ---------------------------------------------------------------- description and state

    def entries(self) -> list[str]:
        """Names of the input vector's entries, in order (dense, then codes)."""
        dense, codes = [], []
        for spec in self.columns:
            name = spec["name"]
            if spec["type"] == "category" and spec["embedding"]:
                codes.append(name)
                continue
            if spec["type"] == "category":
                dense += [f"{name}={v}" for v in spec["levels"]]
                continue
            dense += [f"{name}_{p}" for p in DATE_PARTS] if spec["type"] == "date" else [name]
            dense += [f"{name}_missing"] if spec.get("indicator") else []
        return dense + codes

    def embeddings(self) -> list[list[int]]:
        """[cardinality, dim] of each embedded category, in the order of the codes."""
        return [
            [len(s["levels"]), embedding_dim(len(s["levels"]))]
            for s in self.columns
            if s["type"] == "category" and s["embedding"]
        ]

    @property
    def state(self) -> dict:
        state = {"kind": self.kind, "features": self.features, "mean": self.mean, "std": self.std}
        state["columns"] = self.columns
        if self.target:
            state["target"] = self.target
        return state

    @classmethod
    def from_state(cls, state: dict) -> TablePreprocessor:
        return cls(state["features"], state["mean"], state["std"], state.get("columns"), state.get("target"))
