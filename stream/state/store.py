"""Per-user stores written once per scoring batch: the contexts and the latest lists.

The worker keeps both in changelog-backed Faust tables (:class:`stream.serving.runtime.BatchTable`);
the replay and tests in a :class:`MemoryStore`. A write names the message it comes from
(:class:`Origin`), so a table stores it in the partition of the user's events.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a message was read: named in dead letters and in logs (never its payload).

    ``handle`` is the transport's own object for the message (Faust's event), for stores that
    need it to write where the message came from.
    """

    topic: str
    partition: int
    offset: int
    handle: Any = None


class Store(Protocol):
    """Values by user id: the worker's Faust table, or a dict."""

    def get(self, user_id: str) -> bytes | None:
        """A user's stored value, ``None`` if none."""

    def write(self, writes: Sequence[tuple[str, bytes, Origin]]) -> None:
        """Store each user's value, from a message of the user's partition."""


class MemoryStore(dict[str, bytes]):
    """Values in a dict (the replay; tests)."""

    def write(self, writes: Sequence[tuple[str, bytes, Origin]]) -> None:
        """Store each value."""
        for user_id, value, _ in writes:
            self[user_id] = value
