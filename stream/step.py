"""The per-event step, one definition for the worker and the replay.

For each input message: parse it against the event contract; an invalid one is counted,
dead-lettered with its reason and acknowledged; a valid one updates its user's context in
the store, is counted, and hands the user to the scoring pipeline, whose list publication
acknowledges it. A surprise (a bug) dead-letters the message as ``internal_error`` instead
of stopping the worker.

No Faust here: the agent (:mod:`stream.agents`) passes its changelog-backed table and its
topic sends, the replay (:mod:`stream.tools.replay`) a dict and in-memory collectors.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from stream.context import ContextLimits, update_context
from stream.errors import InvalidEvent
from stream.metrics import Metrics
from stream.pipeline import AckFn, ScoringPipeline, now_ms
from stream.records import Limits, dead_letter, parse_event
from stream.settings import Settings

log = logging.getLogger(__name__)

#: Publishes one dead-letter record (contract ``dead_letter`` v1).
DeadLetterFn = Callable[[bytes], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a message was read: named in dead letters and in logs (never its payload)."""

    topic: str
    partition: int
    offset: int


class EventStep:
    """Parse, then dead-letter or remember, count and submit: one input message at a time."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        store: MutableMapping[str, bytes],
        pipeline: ScoringPipeline,
        send_dead_letter: DeadLetterFn,
    ) -> None:
        self.metrics = metrics
        self.store = store
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
        except Exception as exc:  # a bug must not stop the worker; the message is kept
            log.exception("unexpected error on %s[%d]@%d", *_where(origin))
            await self.dead_letter(raw, origin, "internal_error", f"{type(exc).__name__}: {exc}")
            await ack()

    async def _handle(
        self, raw: bytes | None, key: bytes | None, origin: Origin, ack: AckFn
    ) -> None:
        try:
            # a missing key fails the key check: unkeyed messages would split a user's context
            event = parse_event(raw, key or b"", self.limits)
        except InvalidEvent as exc:
            await self.dead_letter(raw, origin, exc.reason, exc.detail)
            await ack()
            return
        context, changed = update_context(self.store, event, self.context_limits)
        if not changed:
            self.metrics.inc("events_duplicate")
        self.metrics.inc(f"events_type.{event.type}")
        await self.pipeline.submit(event.user_id, context, event, ack)

    async def dead_letter(
        self, raw: bytes | None, origin: Origin, reason: str, detail: str
    ) -> None:
        """Count and publish a dead letter; log the first and every 1,000th per reason."""
        self.metrics.inc("events_invalid")
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
            )
        )


def _where(origin: Origin) -> tuple[str, int, int]:
    return origin.topic, origin.partition, origin.offset
