"""The streaming benchmark.

``python -m stream bench``: model only, queries, the floors, saturation, latency, processes
and memory (:mod:`.cli`); the load it drives (:mod:`.load`), the floors (:mod:`.floor`) and
py-spy profiles (:mod:`.profile`).

Imports the runtime, :mod:`stream.tools.cluster`, :mod:`stream.tools.replay` and
``model_export`` (data).
"""
