"""The per-event step, one definition for the worker and the replay.

For each input message: parse it against the event contract; an invalid one is counted and
dead-lettered with its reason, and acknowledged once the dead letter is delivered; a valid
one updates its user's context, is counted, and hands the user to the scoring pipeline, which
acknowledges it once the list reflecting it is delivered. A redelivered event (its
``event_id`` already in the context) whose user's latest list already reflects it is
acknowledged at once, without a new list (``events_duplicate``); only if no such list went
out (a crash between the context's changelog record and the list) is it scored again
(``events_duplicate_relisted``). A surprise (a bug) dead-letters the message as
``internal_error`` instead of stopping the worker; a :class:`~stream.errors.WorkerFault`
(the worker is stopping) leaves it unacknowledged, to be read again after the restart.

Contexts are written to the store once per scoring batch, not once per event: the step hands
each updated context to the :class:`~stream.state.writer.ContextWriter` it shares with the
pipeline, which writes every waiting context as the batch holding its user is cut, before
the batch is scored, so before any of its events is acknowledged.

A new click or purchase is checked against the user's latest published list
(:mod:`stream.experiments.attribution`): if it acts on an item of that list in time, it counts for
the list's arm. A new click also counts for the click feedback of items added after the model's
export (:mod:`stream.model.feedback`).

No Faust here: the agent (:mod:`stream.agents`) passes its changelog-backed table and its
topic sends, the replay (:mod:`stream.tools.replay.cli`) a :class:`MemoryStore` and in-memory
collectors.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from stream.clock import now_ms
from stream.contracts.records import Event, Limits, dead_letter, parse_event
from stream.errors import InvalidEvent, WorkerFault
from stream.experiments.attribution import ATTRIBUTED_TYPES
from stream.kafka.delivery import AckFn
from stream.processing.pipeline import ScoringPipeline
from stream.settings import Settings
from stream.state.context import ContextLimits, UserContext
from stream.state.store import Origin
from stream.state.writer import ContextWriter
from stream.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

#: Publishes one dead-letter record (contract ``dead_letter`` v1); runs the ack once the
#: broker has it.
DeadLetterFn = Callable[[bytes, AckFn], Awaitable[Any]]


class EventStep:
    """Parse, then dead-letter or remember, count and submit: one input message at a time."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        contexts: ContextWriter,
        pipeline: ScoringPipeline,
        send_dead_letter: DeadLetterFn,
    ) -> None:
        """``contexts``: the writer the pipeline writes at each cut (the same object)."""
        self.metrics = metrics
        self.contexts = contexts
        self.pipeline = pipeline
        self._send_dead_letter = send_dead_letter
        self.limits = Limits.from_settings(settings)
        self.context_limits = ContextLimits.from_settings(settings)

    async def __call__(
        self, raw: bytes | None, key: bytes | None, origin: Origin, ack: AckFn
    ) -> None:
        """Handle one message; ``ack`` runs once it is dead-lettered or its list is out."""
        self.metrics.inc("events_in")
        try:
            await self._handle(raw, key, origin, ack)
        except WorkerFault:  # the worker is stopping; the event is read again after restart
            return
        except Exception as exc:  # a bug must not stop the worker; the message is kept
            log.exception("unexpected error on %s[%d]@%d", *_where(origin))
            detail = f"{type(exc).__name__}: {exc}"
            await self.dead_letter(raw, origin, "internal_error", detail, ack=ack)

    async def _handle(
        self, raw: bytes | None, key: bytes | None, origin: Origin, ack: AckFn
    ) -> None:
        try:
            # a missing key fails the key check: unkeyed messages would split a user's context
            event = parse_event(raw, key or b"", self.limits)
        except InvalidEvent as exc:
            await self.dead_letter(raw, origin, exc.reason, exc.detail, ack=ack)
            return
        self.metrics.inc(f"events_type.{event.type}")
        user_id = event.user_id
        trigger = event
        context, changed = self.context_limits.apply(self.contexts.get(user_id), event)
        if changed:
            self.contexts.hold(user_id, context, origin)
            if event.type in ATTRIBUTED_TYPES:  # a redelivered event is not counted twice
                self.pipeline.attribute(event)
            if event.type == "click":
                self.pipeline.observe_click(event)
        else:
            self.metrics.inc("events_duplicate")
            if self._listed(context, event):  # redelivered, and its list already went out
                await ack()
                return
            self.metrics.inc("events_duplicate_relisted")
            trigger = _newest(user_id, context)  # the list reflects the context: its newest
        await self.pipeline.submit(user_id, context, trigger, ack, origin)

    def _listed(self, context: UserContext, event: Event) -> bool:
        """Whether the user's latest published list was made with ``event`` in its context."""
        latest = self.pipeline.latest_lists.get(event.user_id)
        if latest is None:
            return False
        trigger = orjson.loads(latest)["trigger_event_id"]
        ids = [e.event_id for e in context.events]
        return trigger in ids and ids.index(trigger) >= ids.index(event.event_id)

    async def dead_letter(
        self,
        raw: bytes | None,
        origin: Origin,
        reason: str,
        detail: str,
        counter: str = "events_invalid",
        *,
        ack: AckFn,
    ) -> None:
        """Count (under ``counter`` and the reason) and publish a dead letter.

        ``ack`` runs once the dead letter is delivered. Logs the first and every 1,000th per
        reason.
        """
        self.metrics.inc(counter)
        self.metrics.inc(f"dlq_reason.{reason}")
        count = self.metrics.counters[f"dlq_reason.{reason}"]
        if count == 1 or count % 1000 == 0:  # no payloads in logs, and no log floods
            log.warning(
                "dead-lettered %s[%d]@%d: %s (%d so far for this reason)",
                *_where(origin),
                reason,
                count,
            )
        await self._send_dead_letter(
            dead_letter(
                raw,
                reason=reason,
                detail=detail,
                topic=origin.topic,
                partition=origin.partition,
                offset=origin.offset,
                ts=now_ms(),
            ),
            ack,
        )


def _newest(user_id: str, context: UserContext) -> Event:
    """The newest event of a user's (non-empty) context, as the trigger of a list made from it."""
    newest = context.events[-1]
    return Event(newest.event_id, user_id, newest.type, newest.ts, newest.item_id, newest.query)


def _where(origin: Origin) -> tuple[str, int, int]:
    return origin.topic, origin.partition, origin.offset
