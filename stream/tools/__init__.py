"""streamrec's tools, apart from the worker runtime: they drive workers, never run inside one.

The embedded broker launcher (:mod:`~stream.tools.broker`), the worker-process helper
(:mod:`~stream.tools.worker_process`), the output reader (:mod:`~stream.tools.lists`), topic
creation (:mod:`~stream.tools.topics`), the replay with its metrics and report
(:mod:`~stream.tools.replay`, :mod:`~stream.tools.backtest`,
:mod:`~stream.tools.replay_report`), the benchmark (:mod:`~stream.tools.bench`) and the demo
(:mod:`~stream.tools.demo`). The worker runtime imports nothing from here; the tools that read
MovieLens or train need the ``export`` extra (``python -m stream`` checks it first).
"""
