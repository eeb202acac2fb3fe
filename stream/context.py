"""Per-user context: the recent events and purchased items the scorer reads.

A :class:`UserContext` is immutable, so a snapshot handed to a scoring batch never changes
under it. :func:`apply_event` is idempotent on ``event_id`` within the window, so an event
redelivered after a crash (at-least-once) does not enter the context twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from stream.records import Event

CONTEXT_VERSION = 1


class ContextEvent(NamedTuple):
    """One remembered event (what the scorer needs of it)."""

    event_id: str
    type: str
    item_id: str | None
    query: str | None
    ts: int


@dataclass(frozen=True, slots=True)
class UserContext:
    """A user's most recent events (oldest first) and purchased items (oldest first)."""

    events: tuple[ContextEvent, ...] = ()
    purchased: tuple[str, ...] = ()

    def excluded_items(self, policy: str) -> list[str]:
        """Items that must not be recommended under ``policy`` (``purchased`` or ``seen``)."""
        if policy == "purchased":
            return list(self.purchased)
        seen = dict.fromkeys(e.item_id for e in self.events if e.item_id is not None)
        seen.update(dict.fromkeys(self.purchased))
        return list(seen)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (table value and web endpoint)."""
        return {
            "v": CONTEXT_VERSION,
            "events": [list(e) for e in self.events],
            "purchased": list(self.purchased),
        }

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> UserContext:
        """Inverse of :meth:`to_dict`."""
        return cls(
            events=tuple(ContextEvent(*e) for e in body.get("events", ())),
            purchased=tuple(body.get("purchased", ())),
        )

    def to_bytes(self) -> bytes:
        """The table's value encoding (orjson of :meth:`to_dict`)."""
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> UserContext | None:
        """Inverse of :meth:`to_bytes`; ``None`` for a user with no context yet."""
        return None if raw is None else cls.from_dict(orjson.loads(raw))


def apply_event(
    context: UserContext | None, event: Event, *, max_events: int, max_purchased: int
) -> tuple[UserContext, bool]:
    """Return the context after ``event`` and whether it changed.

    An ``event_id`` already in the window is a redelivery: the context is returned as is.
    """
    context = context or UserContext()
    if any(e.event_id == event.event_id for e in context.events):
        return context, False
    remembered = ContextEvent(event.event_id, event.type, event.item_id, event.query, event.ts)
    events = (*context.events[-(max_events - 1) :], remembered) if max_events > 1 else (remembered,)
    purchased = context.purchased
    if event.type == "purchase" and event.item_id is not None:
        purchased = _append_unique(purchased, event.item_id, max_purchased)
    return UserContext(events=events, purchased=purchased), True


def _append_unique(items: Iterable[str], item: str, limit: int) -> tuple[str, ...]:
    kept = [i for i in items if i != item]
    kept.append(item)
    return tuple(kept[-limit:])
