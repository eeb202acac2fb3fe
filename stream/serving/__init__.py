"""Serving: the worker composed, its endpoints, and search.

Serving: the worker's parts composed once per App (:mod:`.runtime`), its web endpoints
(:mod:`.views`) and personalised search (:mod:`.search`).

May import every package of the runtime; only the entry modules (:mod:`stream.agents`,
:mod:`stream.worker`, :mod:`stream.__main__`) import it.
"""
