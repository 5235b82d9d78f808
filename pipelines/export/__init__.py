"""Exports of registered models for services outside this project.

onnx.py     export_onnx(ref, dir): model.onnx + preprocessing.json + card.json (the registry CLI's `export`)
reader.py   the NumPy reference reader of preprocessing.json (raw inputs -> model input, outputs -> predictions)
runtime.py  load_onnx_export(dir): that reader and an onnxruntime session, on raw inputs
"""
