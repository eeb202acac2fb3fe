"""Attribution: which clicks and purchases a published list earned, per experiment arm.

One rule, used live by the worker and offline by ``python -m stream experiment report`` and
the replay: an event of type ``click`` or ``purchase`` counts for a list when the list is the
user's latest before the event, the event's item is on it, and the event happened within the
attribution window after the list's trigger event (both times are the producers' event
times, so a replay of history attributes as live traffic did). A list earns at most what its
user does next: the user's next event triggers the next list.

Live, "latest" is the newest list the worker had published when the event arrived (what the
storefront could show); offline it is the list of the user's newest earlier event that has
one. With one list per event (a closed-loop replay) the two agree.

Tallies are counters named ``arm_<what>.<arm>``; outside an experiment the arm is
:data:`NO_ARM`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import orjson

from stream.contracts.records import Event, Recommendation
from stream.telemetry.metrics import Metrics

#: Event types a list can earn.
ATTRIBUTED_TYPES = ("click", "purchase")
#: The arm label of lists scored outside an experiment.
NO_ARM = "none"
#: What is tallied per arm: lists published, users given a first list, attributed events.
TALLIES = ("lists", "users", "clicks", "purchases")


def arm_of(rec: Recommendation) -> str:
    """The arm a list is tallied under."""
    return rec.arm or NO_ARM


def attributed(latest: Recommendation | None, event: Event, window_ms: int) -> str | None:
    """``"click"`` or ``"purchase"`` if ``event`` acts on ``latest`` in time, else ``None``."""
    if latest is None or event.type not in ATTRIBUTED_TYPES or event.item_id is None:
        return None
    if not 0 <= event.ts - latest.event_ts <= window_ms:
        return None
    if all(item != event.item_id for item, _ in latest.items):
        return None
    return event.type


class Attribution:
    """The worker's live tallies, counted into its :class:`~stream.telemetry.metrics.Metrics`."""

    def __init__(self, metrics: Metrics, window_s: float) -> None:
        self.metrics = metrics
        self.window_ms = int(window_s * 1000)

    def published(self, rec: Recommendation, first: bool) -> None:
        """Count a published list (``first``: its user had none before)."""
        arm = arm_of(rec)
        self.metrics.inc(f"arm_lists.{arm}")
        if first:
            self.metrics.inc(f"arm_users.{arm}")

    def observe(self, latest: bytes | None, event: Event) -> None:
        """Count ``event`` for the arm of the user's latest list (its bytes) if it earned it."""
        if latest is None or event.type not in ATTRIBUTED_TYPES or event.item_id is None:
            return
        # most events act on items not listed: a byte search rules them out without parsing
        if b'"item_id":' + orjson.dumps(event.item_id) not in latest:
            return
        rec = Recommendation.from_json(latest)
        kind = attributed(rec, event, self.window_ms)
        if kind is not None:
            self.metrics.inc(f"arm_{kind}s.{arm_of(rec)}")


@dataclass
class UserOutcome:
    """What one user's lists of one arm earned."""

    lists: int = 0
    clicks: int = 0
    purchases: int = 0


def attribute_log(
    users: Mapping[str, Iterable[Event]],
    lists: Mapping[str, Recommendation],
    window_ms: int,
) -> dict[tuple[str, str], UserOutcome]:
    """Offline attribution: each (arm, user)'s lists and the events they earned.

    ``users`` holds each user's events in the order they were read (a partition's order);
    ``lists`` the lists by trigger event id (duplicates of at-least-once delivery collapse).
    """
    out: dict[tuple[str, str], UserOutcome] = {}
    for user_id, events in users.items():
        current: Recommendation | None = None
        for ev in events:
            kind = attributed(current, ev, window_ms)
            if kind is not None:
                assert current is not None
                outcome = out[arm_of(current), user_id]
                if kind == "click":
                    outcome.clicks += 1
                else:
                    outcome.purchases += 1
            rec = lists.get(ev.event_id)
            if rec is not None:
                current = rec
                out.setdefault((arm_of(rec), user_id), UserOutcome()).lists += 1
    return out
