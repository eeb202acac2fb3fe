"""The model: ranker, text encoder, co-occurrence.

The model: the ranker (:mod:`.ranker`), MiniLM as a text encoder (:mod:`.text`) and the
co-occurrence statistic behind ItemKNN and the ranker's prior (:mod:`.cooccurrence`).

Imports :mod:`model_export.data` and the worker's manifest and query tokeniser.
"""
