"""Export a registered model to ONNX: model.onnx, preprocessing.json and card.json in one directory.

    python -m pipelines.registry.cli export NAME[:VERSION|:ALIAS] DIR --format onnx [--force]

model.onnx          the network (weights inside: no external-data file), input `x` with a dynamic batch
                    dimension, output `logits` (the task's Sigmoid/Softmax and the units are applied after it)
preprocessing.json  what predict does to a raw input and to the output, as plain data: the preprocessing
                    state from the checkpoint, the tokenizer (text), the output kind and class names;
                    pipelines/export/reader.py is the NumPy reference reader of it
card.json           the registry's card of the version (metrics, params, lineage, the checkpoint's sha256)

The checkpoint is verified against its sha256 and loaded weights-only (pipelines.predict.load_registered),
exported with the dynamo exporter (torch.export; TorchScript is deprecated), and checked in onnxruntime
against torch before the directory appears.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.atomic import atomic_dir
from pipelines.errors import PipelineInputError

FORMAT = "dl-pipeline-onnx-export/1"
MODEL_FILE, PREPROCESSING_FILE, CARD_FILE = "model.onnx", "preprocessing.json", "card.json"
INPUT, OUTPUT = "x", "logits"
CHECK_TOLERANCE = 1e-4  # onnxruntime vs torch on the export's own example batch


def export_spec(info: Any, card: dict[str, Any]) -> dict[str, Any]:
    """preprocessing.json: the preprocessing state, the ONNX model's input/output and what its outputs mean."""
    from models.task_kinds import get_task
    from pipelines.modalities.text import TOKEN

    state = info.data_meta.preprocessing.model_dump()
    shape = list(info.model_spec.get("input_shape") or [1])
    words = state["kind"] == "text"
    spec: dict[str, Any] = {
        "format": FORMAT,
        "model": {"name": card.get("name"), "version": card.get("version"), "candidate": info.candidate},
        "task": info.task,
        "loss": info.loss,
        "classes": info.classes,
        "onnx": {
            "file": MODEL_FILE,
            "input": INPUT,
            "input_dtype": "int64" if words else "float32",
            "input_shape": ["batch", *shape],
            "output": OUTPUT,
        },
        # values: regression / forecast (undo the scaling); sigmoid: one logit of class 1; softmax: one per class
        "outputs": {
            "kind": "values" if get_task(info.task).real_valued else "sigmoid" if info.loss == "bce" else "softmax"
        },
        "preprocessing": state,
    }
    if words:
        spec["tokenizer"] = {"pattern": TOKEN.pattern, "lowercase": True}
    return spec


def _example(spec: dict[str, Any], batch: int = 3) -> np.ndarray:
    """A batch in the model's input shape: zeros for word ids and embedding codes (valid ids), else noise."""
    shape = [batch, *spec["onnx"]["input_shape"][1:]]
    if spec["onnx"]["input_dtype"] == "int64":
        return np.zeros(shape, np.int64)
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    state = spec["preprocessing"]
    if state["kind"] == "table":
        codes = len(x[0]) - len(state["mean"])  # embedding codes follow the dense entries
        if codes:
            x[:, -codes:] = 0.0
    return x


def write_onnx(net: Any, example: np.ndarray, path: Path) -> None:
    """The dynamo exporter with a dynamic batch dimension, all weights inside the one file; quiet unless it fails."""
    import torch
    from torch.export import Dim

    net.eval()
    chatter = io.StringIO()
    notes = logging.getLogger("torch.onnx")  # "torchvision is not installed": not this export's business
    level = notes.level
    notes.setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(chatter):
        warnings.simplefilter("ignore")  # torch.export's deprecation notes about its own internals
        try:
            torch.onnx.export(
                net,
                (torch.from_numpy(example),),
                str(path),
                dynamo=True,
                external_data=False,
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_shapes={"x": {0: Dim("batch", min=1)}},
                verbose=False,
            )
        except Exception as err:  # the exporter's own errors are many types; say which model failed and why
            raise PipelineInputError(f"{path}: torch.onnx.export failed: {err}\n{chatter.getvalue()}") from err
        finally:
            notes.setLevel(level)


def check_export(net: Any, directory: Path, example: np.ndarray) -> float:
    """Largest |onnxruntime - torch| on the example batch and on one row (the batch dimension is dynamic)."""
    import onnx
    import torch

    onnx.checker.check_model(str(directory / MODEL_FILE))
    session = onnx_session(directory / MODEL_FILE)
    worst = 0.0
    for x in (example, example[:1]):
        with torch.no_grad():
            expected = net(torch.from_numpy(x)).numpy()
        got = session.run(None, {INPUT: x})[0]
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def onnx_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initializers are not the user's business
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def export_onnx(
    model: str | tuple[Any, Any, dict[str, Any]],
    out_dir: str | Path,
    registry: Any = "data/registry",
    force: bool = False,
) -> Path:
    """Export NAME[:VERSION|:ALIAS] (or what pipelines.predict.load_registered returned) to `out_dir`.

    Written atomically: a temp directory beside `out_dir`, renamed when complete. An existing non-empty
    `out_dir` is refused unless `force` (then replaced whole). Returns the path of model.onnx."""
    from pipelines.predict import load_registered

    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise PipelineInputError(
            f"export: {', '.join(missing)} not installed; the serve extra has them: "
            f"{sys.executable} -m pip install -c constraints.txt -e '.[serve]' "
            "(make test and make serve-model install it)"
        )
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise PipelineInputError(f"{out}: exists and is not a directory; pick an export directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise PipelineInputError(
            f"{out}: directory exists and is not empty; pick another or pass --force to replace it"
        )
    net, info, card = load_registered(model, registry) if isinstance(model, str) else model
    spec = export_spec(info, card)
    example = _example(spec)
    with atomic_dir(out) as tmp:
        write_onnx(net, example, tmp / MODEL_FILE)
        worst = check_export(net, tmp, example)
        if worst > CHECK_TOLERANCE:
            raise PipelineInputError(
                f"{card.get('name')} v{card.get('version')}: onnxruntime differs from torch by {worst:.3g} "
                f"(more than {CHECK_TOLERANCE}); not exported"
            )
        (tmp / PREPROCESSING_FILE).write_text(json.dumps(spec, indent=2) + "\n")
        (tmp / CARD_FILE).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
        left = sorted(p.name for p in tmp.iterdir() if p.name not in (MODEL_FILE, PREPROCESSING_FILE, CARD_FILE))
        if left:  # an external-data file would make model.onnx useless on its own
            raise PipelineInputError(f"{out}: the exporter wrote unexpected files {left}; not exported")
    return out / MODEL_FILE
