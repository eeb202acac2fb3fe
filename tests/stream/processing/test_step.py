"""The per-event step without Faust: a dict for the table, lists and dead letters in memory."""

from __future__ import annotations

import asyncio
from pathlib import Path

from stream.contracts.records import Event, Recommendation
from stream.kafka.delivery import ack_all
from stream.processing.pipeline import ScoringPipeline
from stream.processing.step import EventStep
from stream.settings import Settings
from stream.state.context import ContextLimits, UserContext, update_context
from stream.state.store import MemoryStore, Origin, Store
from stream.state.writer import ContextWriter
from stream.telemetry.metrics import Metrics
from tests.helpers import InMemoryOutputs


class UnreadableStore(MemoryStore):
    """A table whose reads fail: a stand-in for a bug below the step."""

    def get(self, user_id: str, default: object = None) -> bytes | None:  # type: ignore[override]
        raise RuntimeError("disk on fire")


class UnwritableStore(MemoryStore):
    """A table whose writes fail."""

    def write(self, writes) -> None:
        raise OSError("disk full")


def run_step(
    model_dir: Path,
    store: Store,
    messages: list[tuple[bytes | None, bytes]],
    latest: Store | None = None,
) -> tuple[list[Recommendation], list[dict], list[int], Metrics]:
    """Each message through one EventStep; returns lists, dead letters, acked offsets, metrics.

    Outputs are in memory: delivered (and so acknowledged) as soon as they are collected.
    """
    settings = Settings(model_dir=str(model_dir), model_reload_s=0)
    outputs = InMemoryOutputs()
    acked: list[int] = []
    metrics = Metrics()

    async def run() -> None:
        contexts = ContextWriter(store)
        pipeline = ScoringPipeline(
            settings, metrics, outputs.publish_lists, latest, contexts=contexts
        )
        step = EventStep(settings, metrics, contexts, pipeline, outputs.send_dead_letter)
        await pipeline.start()
        try:
            await pipeline.wait_ready()
            for offset, (key, value) in enumerate(messages):

                async def ack(offset: int = offset) -> None:
                    acked.append(offset)

                await step(value, key, Origin("events", 3, offset), ack)
        finally:
            await pipeline.stop()  # publishes what is pending

    asyncio.run(run())
    return outputs.recommendations(), outputs.letters(), acked, metrics


def test_valid_events_are_remembered_scored_and_acked_after_their_list(tiny_model_dir):
    events = [
        Event("a", "u1", "click", 1, item_id="1"),
        Event("b", "u1", "purchase", 2, item_id="1"),
        Event("c", "u2", "search", 3, query="toy story"),
    ]
    store = MemoryStore()
    messages = [e.to_message() for e in events]
    lists, letters, acked, metrics = run_step(tiny_model_dir, store, messages)
    assert not letters and sorted(acked) == [0, 1, 2]
    context = UserContext.from_bytes(store["u1"])
    assert context is not None and context.purchased == ("1",)
    assert {rec.user_id: rec.trigger_event_id for rec in lists} == {"u1": "b", "u2": "c"}
    assert metrics.counters["events_in"] == 3 and metrics.counters["lists_out"] >= 2


def test_invalid_input_is_dead_lettered_with_where_it_was_read(tiny_model_dir):
    good = Event("a", "u1", "click", 1, item_id="1")
    messages = [(b"u1", b"{nope"), (b"u2", good.to_json()), good.to_message()]
    lists, letters, acked, metrics = run_step(tiny_model_dir, MemoryStore(), messages)
    assert [(x["reason"], x["partition"], x["offset"]) for x in letters] == [
        ("not_json", 3, 0),
        ("key_mismatch", 3, 1),
    ]
    assert sorted(acked) == [0, 1, 2]  # dead letters are acked too: the partition moves on
    assert [rec.trigger_event_id for rec in lists] == ["a"]
    assert metrics.counters["events_invalid"] == 2


def test_a_bug_below_the_step_dead_letters_the_message_and_the_worker_goes_on(tiny_model_dir):
    event = Event("a", "u1", "click", 1, item_id="1")
    store = UnreadableStore()
    lists, letters, acked, metrics = run_step(tiny_model_dir, store, [event.to_message()])
    assert [x["reason"] for x in letters] == ["internal_error"]
    assert "RuntimeError: disk on fire" in letters[0]["detail"]
    assert acked == [0] and not lists


def test_contexts_are_written_once_per_batch_before_it_is_scored(tiny_model_dir):
    """Three events of one user, one batch: one write, with the newest context."""
    writes: list[list[str]] = []

    class CountingStore(MemoryStore):
        def write(self, batch) -> None:
            writes.append([user for user, _, _ in batch])
            super().write(batch)

    events = [Event(f"e{i}", "u1", "click", i, item_id=str(i)) for i in range(1, 4)]
    store = CountingStore()
    lists, _, acked, metrics = run_step(tiny_model_dir, store, [e.to_message() for e in events])
    assert writes == [["u1"]]
    context = UserContext.from_bytes(store["u1"])
    assert context is not None and [e.event_id for e in context.events] == ["e1", "e2", "e3"]
    assert [rec.trigger_event_id for rec in lists] == ["e3"] and sorted(acked) == [0, 1, 2]
    assert metrics.counters["events_coalesced"] == 2


def test_a_failed_context_write_acks_nothing_and_publishes_nothing(tiny_model_dir):
    """The batch is neither scored nor acknowledged (the worker stops: see test_background)."""
    events = [Event("a", "u1", "click", 1, item_id="1"), Event("b", "u2", "click", 2, item_id="2")]
    lists, letters, acked, metrics = run_step(
        tiny_model_dir, UnwritableStore(), [e.to_message() for e in events]
    )
    assert metrics.counters["context_writes_failed"] >= 1
    assert not lists and not acked and not letters


def remembered(events: list[Event], listed_trigger: str) -> tuple[MemoryStore, MemoryStore]:
    """Contexts holding ``events`` (as a changelog restored them) and the user's latest list,
    made when ``listed_trigger`` was the newest event."""
    contexts: dict[str, bytes] = {}
    for event in events:
        update_context(contexts, event, ContextLimits())
    listed = Recommendation(events[0].user_id, [("7", 1.0)], "m", listed_trigger, 1, 5)
    return MemoryStore(contexts), MemoryStore({events[0].user_id: listed.to_json()})


def test_a_redelivered_event_already_listed_is_acked_without_a_new_list(tiny_model_dir):
    """Its context holds it and the user's latest list was made with it: nothing to redo."""
    events = [Event("e1", "u1", "click", 1, item_id="1"), Event("e2", "u1", "click", 2, "2")]
    contexts, latest = remembered(events, listed_trigger="e2")  # made after e1 and e2
    redelivered = [e.to_message() for e in events]
    lists, letters, acked, metrics = run_step(tiny_model_dir, contexts, redelivered, latest)
    assert not lists and not letters and acked == [0, 1]
    assert metrics.counters["events_duplicate"] == 2
    assert metrics.counters["events_duplicate_relisted"] == 0


def test_a_redelivered_event_whose_list_never_went_out_is_scored_again(tiny_model_dir):
    """The context's changelog record was delivered, its list was not (a crash between)."""
    events = [Event("e0", "u1", "click", 1, item_id="1"), Event("e1", "u1", "click", 2, "2")]
    contexts, latest = remembered(events, listed_trigger="e0")  # made before e1
    redelivered = [events[1].to_message()]
    lists, letters, acked, metrics = run_step(tiny_model_dir, contexts, redelivered, latest)
    assert [rec.trigger_event_id for rec in lists] == ["e1"] and acked == [0] and not letters
    assert metrics.counters["events_duplicate_relisted"] == 1


def test_a_failed_scoring_batch_still_hands_over_its_contexts_before_the_acks(tiny_model_dir):
    """No list, but the publish (which carries the contexts' changelog) runs before any ack."""
    settings = Settings(model_dir=str(tiny_model_dir), model_reload_s=0)
    order: list[str] = []

    async def publish_lists(published: list[tuple[str, bytes]], acks) -> None:
        order.append(f"publish {len(published)}")
        await ack_all(acks)

    async def no_dead_letters(value: bytes, ack) -> None:
        raise AssertionError("nothing here is dead-lettered")

    async def run() -> None:
        contexts = ContextWriter(MemoryStore())
        pipeline = ScoringPipeline(settings, Metrics(), publish_lists, contexts=contexts)
        step = EventStep(settings, pipeline.metrics, contexts, pipeline, no_dead_letters)
        await pipeline.start()
        try:
            await pipeline.wait_ready()

            def broken(contexts):
                raise RuntimeError("model on fire")

            pipeline._score = broken  # type: ignore[method-assign]
            pipeline.batcher._score = broken  # type: ignore[union-attr]

            async def ack() -> None:
                order.append("ack")

            event = Event("a", "u1", "click", 1, item_id="1")
            key, value = event.to_message()
            await step(value, key, Origin("events", 0, 0), ack)
        finally:
            await pipeline.stop()
        assert pipeline.metrics.counters["users_failed"] == 1

    asyncio.run(run())
    assert order == ["publish 0", "ack"]


def test_a_click_on_the_latest_list_counts_once_even_if_redelivered(tiny_model_dir):
    settings = Settings(model_dir=str(tiny_model_dir), model_reload_s=0)
    listed = Recommendation("u1", [("7", 1.0), ("9", 0.5)], "m", "e0", 1_000, 1_005)
    latest = MemoryStore({"u1": listed.to_json()})

    async def nowhere(*_: object) -> None:
        return None

    async def run() -> Metrics:
        contexts = ContextWriter(MemoryStore())
        pipeline = ScoringPipeline(settings, Metrics(), nowhere, latest, contexts=contexts)
        step = EventStep(settings, pipeline.metrics, contexts, pipeline, nowhere)
        await pipeline.start()
        try:
            click = Event("e1", "u1", "click", 60_000, item_id="9")
            for offset in range(2):  # the second time: redelivered after a rebalance
                key, value = click.to_message()
                await step(value, key, Origin("events", 0, offset), _ack)
        finally:
            await pipeline.stop()
        return pipeline.metrics

    counters = asyncio.run(run()).counters
    assert counters["arm_clicks.none"] == 1 and counters["events_duplicate"] == 1


async def _ack() -> None:
    return None
