"""Event logs as per-user sequences, split leave-one-out in time order.

Order: a user's events are sorted by ``ts``; events with equal ``ts`` keep their order in the
log (a stable sort), so the split is reproducible from the same file. The *interactions* that
serve as targets are ``click`` events on catalogue items. Per user, the last interaction is
the test target and the second-to-last the validation target; training sees only events
before the validation target. Users with fewer than three interactions train but are not
evaluated. Evaluation histories are every event before the target (the worker's view).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from stream.contracts.manifest import DAY_MS, EVENT_TYPE_IDS, PAD_INDEX
from stream.contracts.records import Event

# Which items are removed from a list: the worker (``STREAMREC_EXCLUDE``), replay and
# evaluation share the policy. Evaluation excludes every earlier item; the worker remembers
# the last ``STREAMREC_MAX_SEEN`` (1000) distinct ones, which is the same set for any user
# below that (every MovieLens user).
from stream.settings import ExcludePolicy

CLICK = EVENT_TYPE_IDS["click"]
PURCHASE = EVENT_TYPE_IDS["purchase"]
NO_QUERY = -1
Target = Literal["valid", "test"]
#: How much of each user's interactions a statistic may see: up to the validation target,
#: up to the test target, or everything (serving).
Horizon = Literal["valid", "test", "all"]
#: Interactions (clicks on catalogue items) a user needs to have validation and test targets:
#: the last is the test target, the one before it the validation target, and at least one
#: more is history. The replay's leave-one-out protocol (``--final-only``) uses the same rule.
MIN_INTERACTIONS = 3


@dataclass(frozen=True)
class UserSequence:
    """One user's events in time order, as model indices."""

    user_id: str
    items: np.ndarray  # int64 item index per event (0: no item / unknown item)
    types: np.ndarray  # int64 event type id per event
    query_ids: np.ndarray  # int64 index into Split.queries per event (-1: no query)
    days: np.ndarray  # float64 event time per event, in days since the epoch
    valid_pos: int  # event index of the validation target (-1: user not evaluated)
    test_pos: int  # event index of the test target (-1: user not evaluated)

    def clicked_before(self, pos: int) -> np.ndarray:
        """Item indices of the interactions before event ``pos``, oldest first."""
        head_items, head_types = self.items[:pos], self.types[:pos]
        return head_items[(head_types == CLICK) & (head_items != PAD_INDEX)]


@dataclass(frozen=True)
class EvalExamples:
    """One example per evaluated user: the history before a target, left-padded."""

    item_ids: np.ndarray  # [users, history]
    event_types: np.ndarray  # [users, history]
    query_ids: np.ndarray  # [users, history]
    targets: np.ndarray  # [users]
    excluded: list[np.ndarray]  # item indices masked for each user
    histories: list[np.ndarray]  # every interaction before the target (for baselines)
    days: np.ndarray  # [users] when the list is made: the newest history event, in days


@dataclass(frozen=True)
class TrainWindows:
    """Left-padded windows of training events with each position's next-click target."""

    item_ids: np.ndarray  # [windows, history]
    event_types: np.ndarray
    query_ids: np.ndarray
    targets: np.ndarray  # 0 where a position has no target inside the training part
    users: np.ndarray  # [windows] index of the window's user in Split.sequences
    days: np.ndarray  # [windows, history] float32 each position's event time, in days


@dataclass(frozen=True)
class Split:
    """Per-user sequences over one catalogue, with the queries they mention."""

    sequences: tuple[UserSequence, ...]
    num_items: int
    queries: tuple[str, ...]
    #: [num_items + 1] when each item first appears in the events, in days (row 0 and items
    #: never seen: the last event's time); the model's item age is counted from it.
    added_days: np.ndarray = field(default_factory=lambda: np.zeros(1))
    #: The catalogue's item ids: ``item_ids[i]`` has model index ``i + 1``.
    item_ids: tuple[str, ...] = ()

    def evaluated(self) -> list[UserSequence]:
        """Users that have validation and test targets."""
        return [s for s in self.sequences if s.test_pos >= 0]

    @staticmethod
    def train_end(seq: UserSequence, until: Horizon = "valid") -> int:
        """Number of leading events of ``seq`` before the ``until`` target (``all``: every one)."""
        if until == "all" or seq.test_pos < 0:
            return len(seq.items)
        return seq.test_pos if until == "test" else seq.valid_pos

    def train_interactions(self, until: Horizon = "valid") -> list[np.ndarray]:
        """Per user, the interactions before the ``until`` target (``all``: every one)."""
        return [seq.clicked_before(self.train_end(seq, until)) for seq in self.sequences]

    def examples(
        self, target: Target, history_length: int, exclude: ExcludePolicy = "seen"
    ) -> EvalExamples:
        """The validation or test example of every evaluated user."""
        users = self.evaluated()
        shape = (len(users), history_length)
        item_ids = np.zeros(shape, dtype=np.int64)
        event_types = np.zeros(shape, dtype=np.int64)
        query_ids = np.full(shape, NO_QUERY, dtype=np.int64)
        targets = np.zeros(len(users), dtype=np.int64)
        excluded, histories = [], []
        days = np.zeros(len(users), dtype=np.float64)
        for row, seq in enumerate(users):
            pos = seq.valid_pos if target == "valid" else seq.test_pos
            start = max(0, pos - history_length)
            width = pos - start
            item_ids[row, history_length - width :] = seq.items[start:pos]
            event_types[row, history_length - width :] = seq.types[start:pos]
            query_ids[row, history_length - width :] = seq.query_ids[start:pos]
            targets[row] = seq.items[pos]
            excluded.append(_excluded(seq, pos, exclude))
            histories.append(seq.clicked_before(pos))
            days[row] = seq.days[pos - 1] if pos > 0 else seq.days[pos]
        return EvalExamples(item_ids, event_types, query_ids, targets, excluded, histories, days)

    def windows(self, history_length: int, until: Horizon = "valid") -> TrainWindows:
        """Training windows: each event before ``until`` is a position with its next-click target.

        Targets stay inside that part: with ``until="valid"`` nothing predicts the validation
        item; ``until="test"`` adds the validation transition (the final fit for the test).
        """
        items, types, queries, targets, users, days = [], [], [], [], [], []
        for user, seq in enumerate(self.sequences):
            end = self.train_end(seq, until)
            if end == 0:
                continue
            next_click = _next_click_targets(seq.items[:end], seq.types[:end])
            for stop in range(end, 0, -history_length):
                start = max(0, stop - history_length)
                pad = history_length - (stop - start)
                items.append(np.pad(seq.items[start:stop], (pad, 0)))
                types.append(np.pad(seq.types[start:stop], (pad, 0)))
                queries.append(np.pad(seq.query_ids[start:stop], (pad, 0), constant_values=-1))
                targets.append(np.pad(next_click[start:stop], (pad, 0)))
                days.append(np.pad(seq.days[start:stop], (pad, 0), mode="edge"))
                users.append(user)
        return TrainWindows(
            item_ids=np.stack(items).astype(np.int64),
            event_types=np.stack(types).astype(np.int64),
            query_ids=np.stack(queries).astype(np.int64),
            targets=np.stack(targets).astype(np.int64),
            users=np.array(users, dtype=np.int64),
            days=np.stack(days).astype(np.float32),
        )


def _excluded(seq: UserSequence, pos: int, policy: ExcludePolicy) -> np.ndarray:
    items, types = seq.items[:pos], seq.types[:pos]
    if policy == "purchased":
        items = items[types == PURCHASE]
    return np.unique(items[items != PAD_INDEX])


def _next_click_targets(items: np.ndarray, types: np.ndarray) -> np.ndarray:
    """For each position, the item of the next click strictly after it (0 if none)."""
    targets = np.zeros(len(items), dtype=np.int64)
    upcoming = 0
    for pos in range(len(items) - 1, -1, -1):
        targets[pos] = upcoming
        if types[pos] == CLICK and items[pos] != PAD_INDEX:
            upcoming = items[pos]
    return targets


def build_split(events: Iterable[Event], items: Sequence[str]) -> Split:
    """Group ``events`` by user in time order and mark the leave-one-out targets."""
    index = {item: i + 1 for i, item in enumerate(items)}
    per_user: dict[str, list[Event]] = defaultdict(list)
    for ev in events:
        per_user[ev.user_id].append(ev)
    query_index: dict[str, int] = {}
    sequences = []
    first_seen: dict[int, float] = {}
    for user, user_events in per_user.items():
        user_events.sort(key=lambda e: e.ts)  # stable: equal ts keep log order
        item_ids = np.array(
            [index.get(e.item_id, PAD_INDEX) if e.item_id else PAD_INDEX for e in user_events],
            dtype=np.int64,
        )
        types = np.array([EVENT_TYPE_IDS[e.type] for e in user_events], dtype=np.int64)
        query_ids = np.array(
            [
                query_index.setdefault(e.query, len(query_index)) if e.query else NO_QUERY
                for e in user_events
            ],
            dtype=np.int64,
        )
        days = np.array([e.ts / DAY_MS for e in user_events], dtype=np.float64)
        for item, day in zip(item_ids.tolist(), days.tolist(), strict=True):
            if item and day < first_seen.get(item, np.inf):
                first_seen[item] = day
        clicks = np.flatnonzero((types == CLICK) & (item_ids != PAD_INDEX))
        enough = len(clicks) >= MIN_INTERACTIONS
        valid_pos, test_pos = (int(clicks[-2]), int(clicks[-1])) if enough else (-1, -1)
        sequences.append(UserSequence(user, item_ids, types, query_ids, days, valid_pos, test_pos))
    latest = max((float(s.days[-1]) for s in sequences if len(s.days)), default=0.0)
    added = np.full(len(items) + 1, latest, dtype=np.float64)
    for item, day in first_seen.items():
        added[item] = day
    return Split(tuple(sequences), len(items), tuple(query_index), added, tuple(items))
