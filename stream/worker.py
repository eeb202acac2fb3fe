"""What ``faust -A stream.app worker`` runs: the worker installed on the one App.

Faust's autodiscovery imports this module (``App(autodiscover=["stream.worker"])``); it is the one
place a :class:`~stream.serving.runtime.Runtime` is built at import. Tests and other Apps call
:func:`stream.agents.install` on an App of their own.
"""

from __future__ import annotations

from stream.agents import install
from stream.app import app

runtime = install(app)
