"""model_export: MovieLens data, ranker training, ONNX export and parity checks."""
