"""Builders the unit tests share: events, contexts, logs, outputs kept in memory, small rankers.

Integration helpers (brokers, worker processes, the outage proxy, the object store) live in
``tests/integration/``; the fixtures (datasets, tiny models, the session broker) in
``tests/conftest.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import orjson

from stream.contracts.records import Event, Recommendation
from stream.kafka.delivery import AckFn, ack_all
from stream.state.context import UserContext, apply_event

#: The repository's root.
ROOT = Path(__file__).resolve().parents[1]


def event(
    n: int | str,
    item: str | None = None,
    kind: str = "click",
    *,
    user: str = "u",
    ts: int | None = None,
    query: str | None = None,
) -> Event:
    """Event ``e{n}`` of ``user`` at ``ts`` (default ``n``, when ``n`` is a number)."""
    stamp = ts if ts is not None else int(n)
    return Event(f"e{n}", user, kind, stamp, item_id=item, query=query)


def context_of(
    *events: Event, max_events: int = 50, max_purchased: int = 500
) -> UserContext | None:
    """The context the worker's update rule folds ``events`` into."""
    context = None
    for e in events:
        context, _ = apply_event(context, e, max_events=max_events, max_purchased=max_purchased)
    return context


class InMemoryOutputs:
    """The worker's outputs kept in memory: delivered, so acknowledged, as soon as kept."""

    def __init__(self) -> None:
        self.lists: list[tuple[str, bytes]] = []
        self.dead_letters: list[bytes] = []

    async def prepare(self) -> None:
        """Nothing to create."""

    async def publish_lists(self, lists: list[tuple[str, bytes]], acks: Sequence[AckFn]) -> None:
        self.lists.extend(lists)
        await ack_all(acks)

    async def send_dead_letter(self, value: bytes, ack: AckFn) -> None:
        self.dead_letters.append(value)
        await ack()

    def recommendations(self) -> list[Recommendation]:
        """The lists kept, decoded from their wire bytes."""
        return [Recommendation.from_json(value) for _, value in self.lists]

    def letters(self) -> list[dict]:
        """The dead letters kept, decoded."""
        return [orjson.loads(value) for value in self.dead_letters]


def small_ranker(**changes):
    """A ranker of 30 items and width 8 with a random co-occurrence prior (``changes`` on top)."""
    import torch

    from model_export.model.ranker import RankerConfig, SequenceRanker

    shape = {"num_items": 30, "dim": 8, "history_length": 6, "max_k": 10, "use_text": False}
    config = RankerConfig(**{**shape, **changes})
    ranker = SequenceRanker(config).eval()
    ranker.set_cooc(torch.rand(31, 31) * 5)
    return ranker


def searching_ranker():
    """A small ranker with text and the search term, items' text vectors random unit rows."""
    import torch

    ranker = small_ranker(use_text=True, text_dim=12)
    generator = torch.Generator().manual_seed(5)
    texts = torch.nn.functional.normalize(torch.randn(30, 12, generator=generator), dim=1)
    with torch.no_grad():
        ranker.set_item_text(texts)
    return ranker


def users_log(events, *, max_events_per_user, at_least):
    """Whole histories of users with short ones, in log order, until ``at_least`` events."""
    from stream.tools.replay.metrics import by_user

    keep, total = set(), 0
    for user, history in by_user(events).items():
        if total >= at_least:
            break
        if len(history) <= max_events_per_user:
            keep.add(user)
            total += len(history)
    return sorted((e for e in events if e.user_id in keep), key=lambda e: e.ts)


def seen_settings(model_dir):
    """Default settings with ``model_dir`` and seen items excluded (MovieLens lists)."""
    from stream.settings import Settings

    return Settings().with_overrides(model_dir=str(model_dir), exclude="seen")
