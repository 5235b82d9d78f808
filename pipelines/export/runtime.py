"""Run an export on raw inputs: the reference reader of preprocessing.json, then onnxruntime (no torch).

model = load_onnx_export("export/digits")
logits = model.logits(images)          # what the network emits
point, probs = model.predict(images)   # class names / words / values, and class probabilities
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.export.onnx import CARD_FILE, FORMAT, PREPROCESSING_FILE, onnx_session
from pipelines.export.reader import model_inputs, predictions


class OnnxExport:
    """An exported model loaded in onnxruntime, with its preprocessing."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.spec: dict[str, Any] = json.loads((self.directory / PREPROCESSING_FILE).read_text())
        if self.spec.get("format") != FORMAT:
            raise ValueError(f"{self.directory / PREPROCESSING_FILE}: not a {FORMAT} file")
        self.card: dict[str, Any] = json.loads((self.directory / CARD_FILE).read_text())
        onnx = self.spec["onnx"]
        self.session = onnx_session(self.directory / onnx["file"])
        self.input_name, self.output_name = onnx["input"], onnx["output"]

    def inputs(self, instances: Any) -> np.ndarray:
        """Raw inputs (see pipelines.export.reader.model_inputs) -> the model's input array."""
        return model_inputs(self.spec, instances)

    def logits(self, instances: Any) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: self.inputs(instances)})[0]

    def predict(self, instances: Any) -> tuple[list[Any], np.ndarray | None]:
        """(prediction per input, class probabilities or None), as pipelines.predict reports them."""
        return predictions(self.spec, self.logits(instances))


def load_onnx_export(directory: str | Path) -> OnnxExport:
    return OnnxExport(directory)
