"""Per-user context: the recent events, purchased and seen items the scorer reads.

A :class:`UserContext` is immutable, so a snapshot handed to a scoring batch never changes under it.
:func:`apply_event` is idempotent on ``event_id`` within the window, so an event redelivered after a
crash (at-least-once) does not enter the context twice. :func:`update_context` folds one event into
a store of contexts; the worker keeps updated contexts until their scoring batch is cut and writes
each once (:mod:`stream.processing.step`), which must leave the same contexts as this per-event fold
(the worker tests compare the two).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from stream.contracts.records import Event
from stream.settings import ExcludePolicy, Settings

#: 2 added ``seen``; a version-1 context reads with ``seen`` taken from its events.
CONTEXT_VERSION = 2


class ContextEvent(NamedTuple):
    """One remembered event (what the scorer needs of it)."""

    event_id: str
    type: str
    item_id: str | None
    query: str | None
    ts: int


@dataclass(frozen=True, slots=True)
class UserContext:
    """A user's most recent events, purchased items and seen items (each oldest first).

    ``seen`` (kept only under ``STREAMREC_EXCLUDE=seen``) remembers items beyond the event
    window, so a list never repeats an item the user met long ago.
    """

    events: tuple[ContextEvent, ...] = ()
    purchased: tuple[str, ...] = ()
    seen: tuple[str, ...] = ()

    def excluded_items(self, policy: ExcludePolicy) -> list[str]:
        """Items that must not be recommended under ``policy`` (``purchased`` or ``seen``)."""
        if policy == "purchased":
            return list(self.purchased)
        seen = dict.fromkeys(self.seen)
        seen.update(dict.fromkeys(e.item_id for e in self.events if e.item_id is not None))
        seen.update(dict.fromkeys(self.purchased))
        return list(seen)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (table value and web endpoint)."""
        return {
            "v": CONTEXT_VERSION,
            "events": [list(e) for e in self.events],
            "purchased": list(self.purchased),
            "seen": list(self.seen),
        }

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> UserContext:
        """Inverse of :meth:`to_dict` (reads version 1 too)."""
        events = tuple(map(ContextEvent._make, body.get("events", ())))
        seen = body.get("seen")
        if seen is None:  # version 1
            seen = dict.fromkeys(e.item_id for e in events if e.item_id is not None)
        return cls(events=events, purchased=tuple(body.get("purchased", ())), seen=tuple(seen))

    def to_bytes(self) -> bytes:
        """The table's value encoding (orjson of :meth:`to_dict`)."""
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> UserContext | None:
        """Inverse of :meth:`to_bytes`; ``None`` for a user with no context yet."""
        return None if raw is None else cls.from_dict(orjson.loads(raw))


@dataclass(frozen=True, slots=True)
class ContextLimits:
    """How much of a user's past a context keeps (from the settings)."""

    max_events: int = 50
    max_purchased: int = 500
    max_seen: int = 0  # 0: no seen items beyond the event window

    @classmethod
    def from_settings(cls, settings: Settings) -> ContextLimits:
        """The worker's limits; seen items are kept only when the exclusion policy needs them."""
        return cls(
            settings.context_events,
            settings.max_purchased,
            settings.max_seen if settings.exclude == "seen" else 0,
        )

    def apply(self, context: UserContext | None, event: Event) -> tuple[UserContext, bool]:
        """:func:`apply_event` within these limits."""
        return apply_event(
            context,
            event,
            max_events=self.max_events,
            max_purchased=self.max_purchased,
            max_seen=self.max_seen,
        )


def apply_event(
    context: UserContext | None,
    event: Event,
    *,
    max_events: int,
    max_purchased: int,
    max_seen: int = 0,
) -> tuple[UserContext, bool]:
    """Return the context after ``event`` and whether it changed.

    An ``event_id`` already in the window is a redelivery: the context is returned as is.
    """
    context = context or UserContext()
    event_id = event.event_id
    for kept in context.events:
        if kept[0] == event_id:  # ContextEvent.event_id
            return context, False
    remembered = ContextEvent(event.event_id, event.type, event.item_id, event.query, event.ts)
    events = (*context.events[-(max_events - 1) :], remembered) if max_events > 1 else (remembered,)
    purchased, seen = context.purchased, context.seen
    if event.item_id is not None:
        if event.type == "purchase":
            purchased = _append_unique(purchased, event.item_id, max_purchased)
        if max_seen > 0:
            seen = _append_unique(seen, event.item_id, max_seen)
    return UserContext(events=events, purchased=purchased, seen=seen), True


def update_context(
    store: MutableMapping[str, bytes], event: Event, limits: ContextLimits
) -> tuple[UserContext, bool]:
    """Apply ``event`` to its user's stored context; writes back only if it changed."""
    context, changed = limits.apply(UserContext.from_bytes(store.get(event.user_id)), event)
    if changed:
        store[event.user_id] = context.to_bytes()
    return context, changed


def _append_unique(items: tuple[str, ...], item: str, limit: int) -> tuple[str, ...]:
    """``items`` with ``item`` moved (or added) last, at most ``limit`` long."""
    if items and items[-1] == item:
        return items
    if item in items:
        items = tuple(i for i in items if i != item)
    return (*items[-(limit - 1) :], item) if limit > 1 else (item,)
