"""streamrec's tools, apart from the worker runtime: they drive workers, never run inside one.

The embedded broker launcher (:mod:`~stream.tools.cluster.broker`), the worker-process helper
(:mod:`~stream.tools.cluster.worker_process`), the output reader
(:mod:`~stream.tools.cluster.lists`), topic creation (:mod:`~stream.tools.cluster.topics`), the
replay with its metrics and report (:mod:`~stream.tools.replay.cli`,
:mod:`~stream.tools.replay.metrics`, :mod:`~stream.tools.replay.report`), the benchmark
(:mod:`~stream.tools.bench.cli`) and the demo (:mod:`~stream.tools.demo`). The worker runtime
imports nothing from here; the tools that read MovieLens or train need the ``export`` extra
(``python -m stream`` checks it first).
"""
