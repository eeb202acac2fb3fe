"""Data: events, items, splits and search queries.

Data: where events and items come from (:mod:`.sources`: MovieLens-100k, your own logs), the
leave-one-out split and model inputs (:mod:`.split`), and search queries as people type them
(:mod:`.search_queries`).

Imports :mod:`model_export.ranking` and the worker's contracts and settings.
"""
