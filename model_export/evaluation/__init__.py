"""Offline evaluation and its baselines.

Evaluation: the offline evaluation over seeds with its ablation (:mod:`.evaluate`) and the
baselines it measures against (:mod:`.baselines`: most popular, ItemKNN).

May import every other package of ``model_export``.
"""
