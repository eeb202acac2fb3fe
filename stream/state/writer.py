"""Contexts written once per scoring batch: held until their batch is cut, then stored.

An updated context waits here (where the user's next events find it) until the pipeline cuts
the batch holding that user; :meth:`ContextWriter.write` then stores every waiting context,
before the batch is scored, so before any of its events is acknowledged. The newest contexts
written are also kept decoded (``STREAMREC_CONTEXT_CACHE_USERS``), reused only while the
store still holds the very bytes written: the same object on the memory store, equal bytes
on RocksDB; bytes written elsewhere (another worker's, a recovered changelog's) are decoded.
"""

from __future__ import annotations

from stream.state.context import UserContext
from stream.state.store import Origin, Store


class ContextWriter:
    """The one writer of a store of contexts: holds updates, writes them per batch."""

    def __init__(self, store: Store, cache_users: int = 0) -> None:
        self.store = store
        #: Updated contexts not written yet, by user, with the message of the newest change.
        self._waiting: dict[str, tuple[UserContext, Origin]] = {}
        #: The newest contexts written, decoded, with the bytes written (oldest first).
        self._decoded: dict[str, tuple[bytes, UserContext]] = {}
        self._cache_users = cache_users

    def get(self, user_id: str) -> UserContext | None:
        """The user's newest context: the waiting one, else the stored one."""
        waiting = self._waiting.get(user_id)
        return waiting[0] if waiting else self._stored(user_id)

    def hold(self, user_id: str, context: UserContext, origin: Origin) -> None:
        """Keep ``context`` until the next :meth:`write` (``origin``: its newest change)."""
        self._waiting[user_id] = (context, origin)

    def _stored(self, user_id: str) -> UserContext | None:
        raw = self.store.get(user_id)
        decoded = self._decoded.get(user_id)
        if decoded is not None and raw is not None and (decoded[0] is raw or decoded[0] == raw):
            return decoded[1]
        return UserContext.from_bytes(raw)

    def write(self) -> None:
        """Store every waiting context (the pipeline calls it as each batch is cut).

        Raises:
            Exception: whatever the store raised; the contexts stay waiting.
        """
        if not self._waiting:
            return
        writes = [
            (user, context.to_bytes(), origin) for user, (context, origin) in self._waiting.items()
        ]
        self.store.write(writes)
        if self._cache_users:
            decoded = self._decoded
            for (user, raw, _), (context, _) in zip(writes, self._waiting.values(), strict=True):
                decoded.pop(user, None)  # newest last
                decoded[user] = (raw, context)
            for _ in range(len(decoded) - self._cache_users):
                del decoded[next(iter(decoded))]
        self._waiting = {}
