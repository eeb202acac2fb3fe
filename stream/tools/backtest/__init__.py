"""The temporal backtest.

``python -m stream backtest`` (``make backtest``): train before a cut, replay the rest with
new items published as they appear, against online and frozen baselines (:mod:`.cli`).

Imports the runtime, :mod:`stream.tools.replay` and ``model_export``.
"""
