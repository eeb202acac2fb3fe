"""Replay: a log through the worker's own path, its metrics and reports.

``python -m stream replay``: a log through the worker's own path, in process or through a
broker (:mod:`.cli`); the replay metrics, each event against the list current before it
(:mod:`.metrics`); the report (:mod:`.report`); and ``python -m stream experiment report``
(:mod:`.experiment`), which reads a replay or the topics per arm.

Imports the runtime, :mod:`stream.tools.cluster` and ``model_export`` (data, ranking metrics).
"""
