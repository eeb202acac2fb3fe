"""The scoring agent: Faust's side of the per-event step, and the worker's start-up checks.

:func:`install` builds the worker's :class:`~stream.serving.runtime.Runtime` on an App and registers
the agent, a stats timer, the start-up checks and the web views. The worker's consumer hands
the agent each partition's fetch of the events topic as one item
(:class:`~stream.kafka.transport.FetchMessage`), and the agent hands each of its events, with
Faust's event (the table writes a context as from its user's newest message), to
:class:`~stream.processing.step.EventStep`; acks are its own, one per event, made once the list
reflecting it is out. A single message (Faust's test channel, ``STREAMREC_TAKE_FETCHES``
off) takes the same step. The worker installs it on the one App (:mod:`stream.worker`); a
unit test on an App of its own, with in-memory outputs.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import socket
from typing import TYPE_CHECKING, Any, cast

import orjson
from faust import Stream
from faust.types import EventT, StreamT
from faust.types.tuples import ConsumerMessage

from stream.contracts.manifest import load_manifest
from stream.errors import ConfigError, ModelLoadError
from stream.experiments.arms import load_experiment
from stream.kafka.transport import Consumer, FetchMessage
from stream.serving import views
from stream.serving.runtime import Outputs, Runtime
from stream.settings import Settings
from stream.state.store import Origin

if TYPE_CHECKING:  # the module builds the one App on import; the type is all we need
    from stream.app import App

log = logging.getLogger(__name__)

#: Seconds between two ``stats`` log lines.
STATS_INTERVAL_S = 10.0


def install(app: App, outputs: Outputs | None = None) -> Runtime:
    """Build the worker on ``app``: runtime, agent, timer, start-up checks and web views."""
    runtime = Runtime(app, outputs)
    settings = runtime.settings

    @app.on_worker_init.connect
    def _check(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        """Refuse to start on a model or a web port that cannot be served, saying why."""
        logging.getLogger("stream").setLevel(settings.log_level.upper())
        for where, version in check_can_serve(settings).items():
            log.info("serving model %s from %s", version, where)

    @app.agent(runtime.events_topic, name="score-events")
    async def score_events(stream: StreamT) -> None:
        """Validate, remember and queue each event for scoring; ack once its list is out."""
        await runtime.outputs.prepare()
        await runtime.pipeline.wait_ready()
        manual = cast(Stream, stream).noack()  # acks are ours: after the list is out
        checked = False
        async for event in manual.events():
            if not checked:
                checked = True
                mismatch = runtime.partitions_mismatch()
                if mismatch is not None:
                    log.critical("%s", mismatch)
                    await app.crash(mismatch)
                    return
            message = event.message
            if isinstance(message, FetchMessage):  # the worker's consumer: a whole fetch
                await take_fetch(runtime, message, event)
                await manual.ack(event)  # Faust's sensors see the fetch out (it commits nothing)
                continue
            await runtime.step(  # one message (a test channel, another transport)
                message.value,
                message.key,
                Origin(message.topic, message.partition, message.offset, event),
                functools.partial(manual.ack, event),
            )

    @app.timer(interval=STATS_INTERVAL_S)
    async def log_stats() -> None:
        """Log the counters every :data:`STATS_INTERVAL_S` seconds (a failure is a death)."""
        try:
            counters = orjson.dumps(runtime.metrics.snapshot()["counters"]).decode()
            log.info(
                "stats lag=%d read_lag=%d pending_deliveries=%d %s",
                runtime.consumer_lag(),
                runtime.read_lag(),
                runtime.pending_deliveries(),
                counters,
            )
        except Exception as exc:  # supervised like the other background work: named, stops
            runtime.tasks.fail("stats timer", exc)

    runtime.agent = score_events
    views.install(app, runtime)
    return runtime


async def take_fetch(runtime: Runtime, fetch: FetchMessage, event: EventT) -> None:
    """Hand each record of one fetch to the step; each is acknowledged on its own.

    A rebalance while the fetch is being taken leaves its remaining records unprocessed and
    unacknowledged, for the partition's owner to read (:meth:`Consumer.take`).
    """
    consumer = cast(Consumer, runtime.app.consumer)
    step = runtime.step
    topic, partition = fetch.topic, fetch.partition
    runtime.metrics.observe("fetch_events", len(fetch.records))
    for record in fetch.records:
        if not consumer.take(record):
            break
        await step(
            record.value,
            record.key,
            Origin(topic, partition, record.offset, event),
            functools.partial(_ack_taken, consumer, record),
        )


async def _ack_taken(consumer: Consumer, record: ConsumerMessage) -> None:
    consumer.ack_taken(record)


def check_can_serve(settings: Settings) -> dict[str, str]:
    """The model version(s) a worker with ``settings`` would serve, by directory (and arm).

    Raises:
        SystemExit: the experiment file is malformed, a model directory cannot be served,
            or the web port is taken; the one line says which and why.
    """
    try:
        if not settings.experiment:
            served = {settings.model_dir: load_manifest(settings.model_dir).model_version}
        else:
            experiment = load_experiment(settings.experiment)
            served = {}
            for arm in experiment.arms:
                try:
                    manifest = load_manifest(arm.model_dir)
                except ModelLoadError as exc:
                    msg = (
                        f"experiment {experiment.name!r}, arm {arm.name!r}: its model_dir "
                        f"{arm.model_dir} cannot be served: {exc}"
                    )
                    raise ModelLoadError(msg) from None
                served[f"{arm.model_dir} (arm {arm.name})"] = manifest.model_version
    except (ModelLoadError, ConfigError) as exc:
        msg = f"streamrec: cannot start the worker: {exc}"
        raise SystemExit(msg) from None
    if settings.web_enabled:
        _check_web_exposure(settings)
        _check_web_port(settings.web_host, settings.web_port)
    return served


def _check_web_exposure(settings: Settings) -> None:
    """Exit if the per-user endpoints would be reachable beyond this host without a token."""
    if settings.web_token or _loopback(settings.web_host):
        return
    msg = (
        f"streamrec: cannot start the worker: STREAMREC_WEB_HOST={settings.web_host} serves "
        "users' lists beyond this host, so it needs STREAMREC_WEB_TOKEN (from a Kubernetes "
        "Secret or a Compose env file; see docs/operations.md), or bind 127.0.0.1"
    )
    raise SystemExit(msg)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _check_web_port(host: str, port: int) -> None:
    """Exit, naming the port, if the web server could not bind it.

    Faust's web server failing to bind leaves the worker running without its endpoints
    (and probes); an operator must hear about it at start-up instead.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the web server does
        try:
            probe.bind((host, port))
        except OSError as exc:
            msg = (
                f"streamrec: cannot start the worker: the web port {host}:{port} is not "
                f"available ({exc.strerror}); free it or set STREAMREC_WEB_PORT"
            )
            raise SystemExit(msg) from None
