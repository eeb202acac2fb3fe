"""ONNX export and parity.

Export: the ONNX files and the model directory (:mod:`.onnx`), and PyTorch against ONNX
Runtime, every mismatch collected (:mod:`.parity`).

Imports :mod:`model_export.data`, :mod:`model_export.model` and :mod:`model_export.training`.
"""
