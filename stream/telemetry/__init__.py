"""Telemetry: what the worker says about itself.

Counters and histograms (:mod:`.metrics`), their Prometheus text (:mod:`.prometheus`), and the
watched background tasks whose death stops the worker (:mod:`.background`,
``/live/``).

Imports nothing else from streamrec: every other package may use it.
"""
