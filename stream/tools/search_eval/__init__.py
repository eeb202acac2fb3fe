"""The search benchmark.

``python -m stream search-eval`` (``make search-eval``): each family of search queries
against the items, then through the list after a search event (:mod:`.cli`, :mod:`.lists`).

Imports the runtime, :mod:`stream.tools.replay`, :mod:`stream.tools.backtest` (the cut model)
and ``model_export``.
"""
