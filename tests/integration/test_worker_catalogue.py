"""The worker follows the catalogue topic live (embedded broker, tiny exported model).

Every trained item but a few is made unavailable, so which items may appear in a list is
known exactly; a new item (and its users' clicks), removals, a text change and a restart then
change that set.
"""

from __future__ import annotations

import time
from base64 import b64decode

import orjson

from stream.contracts.manifest import load_manifest
from stream.contracts.records import CatalogueRecord, Event
from tests.conftest import WorkerFactory
from tests.integration.kafka_io import consume_until, produce, produce_events
from tests.integration.workers import (
    assert_no_traceback,
    items_of,
    list_for,
    lists_by_trigger,
    wait_for,
)

KEPT = 5
NEW_ITEM = CatalogueRecord("new-1", "Galactic Harvest (1998) | Sci-Fi", ts=0)


def search(n: int, query: str) -> Event:
    return Event(f"q{n}", "shopper", "search", int(time.time() * 1000), query=query)


def fan(n: int, item: str) -> Event:
    return Event(f"f{n}", f"fan-{n}", "click", int(time.time() * 1000), item_id=item)


def test_new_changed_removed_items_and_a_restart(worker_factory: WorkerFactory, tiny_model_dir):
    trained = load_manifest(tiny_model_dir).items
    kept = list(trained[:KEPT])
    worker = worker_factory(top_k=20, exclude="seen")
    s = worker.settings
    off = [CatalogueRecord(i, "gone", ts=1, available=False).to_message() for i in trained[KEPT:]]
    produce(s.bootstrap_servers, s.catalogue_topic, off)
    worker.start()
    worker.wait_ready()
    state = wait_for(worker, lambda c: c["blocked_items"] == len(trained) - KEPT)
    assert state["read"] and state["items"] == len(trained) - KEPT and state["available"] == 0
    assert set(items_of(list_for(worker, search(0, "anything")))) == set(kept)

    # a new item: one message; a search for its title once the worker has read it
    added = CatalogueRecord(NEW_ITEM.item_id, NEW_ITEM.text, ts=int(time.time() * 1000))
    produce(s.bootstrap_servers, s.catalogue_topic, [added.to_message()])
    wait_for(worker, lambda c: c["extra_items"] == 1)
    assert set(items_of(list_for(worker, search(1, "Galactic Harvest")))) == {*kept, "new-1"}
    freshness = worker.stats()["summaries"]["catalogue_freshness_ms"]
    assert freshness["count"] == 1  # from the record's ts to the item set holding it

    # its users' clicks lift it (click feedback): the same context, a higher score for it
    first = dict(list_for(worker, fan(0, kept[1])).items)
    hits = [fan(n, "new-1") for n in range(1, 16)]
    produce_events(s.bootstrap_servers, s.events_topic, hits)
    consume_until(
        s.bootstrap_servers,
        [s.recommendations_topic],
        lambda r: {e.event_id for e in hits} <= set(lists_by_trigger(r[s.recommendations_topic])),
    )
    later = dict(list_for(worker, fan(16, kept[1])).items)
    assert later["new-1"] - later[kept[2]] > first["new-1"] - first[kept[2]] + 1.0

    # removal (null value) and unavailability take effect for the next list
    produce(
        s.bootstrap_servers,
        s.catalogue_topic,
        [(b"new-1", None), CatalogueRecord(kept[0], "x", ts=2, available=False).to_message()],
    )
    wait_for(worker, lambda c: c["extra_items"] == 0)
    assert set(items_of(list_for(worker, search(2, "Galactic Harvest")))) == set(kept[1:])

    # a text change re-embeds the item: same user context, a different score for it
    before = dict(list_for(worker, search(3, "Galactic Harvest")).items)
    changed = CatalogueRecord(kept[1], "Galactic Harvest (1998) | Sci-Fi", ts=3)
    produce(s.bootstrap_servers, s.catalogue_topic, [changed.to_message()])
    wait_for(worker, lambda c: c["extra_items"] == 1)
    after = dict(list_for(worker, search(4, "Galactic Harvest")).items)
    assert set(after) == set(kept[1:]) and after[kept[1]] != before[kept[1]]

    # an invalid record goes to the dead-letter topic with its reason
    produce(s.bootstrap_servers, s.catalogue_topic, [(b"bad", b'{"item_id":"bad","ts":1}')])
    letters = consume_until(s.bootstrap_servers, [s.dlq_topic], lambda r: bool(r[s.dlq_topic]))
    letter = orjson.loads(letters[s.dlq_topic][0][1])
    assert letter["reason"] == "bad_text" and letter["topic"] == s.catalogue_topic
    assert b64decode(letter["payload_b64"]) == b'{"item_id":"bad","ts":1}'

    # a restarted worker reads the catalogue again before it is ready
    assert worker.stop() == 0
    assert_no_traceback(worker)
    worker.start()
    worker.wait_ready()
    state = worker.stats()["catalogue"]
    assert state["read"] and state["extra_items"] == 1
    assert state["blocked_items"] == len(trained) - KEPT + 2  # kept[0], and kept[1]'s old vector
    assert set(items_of(list_for(worker, search(5, "Galactic Harvest")))) == set(kept[1:])
    assert worker.stats()["counters"]["catalogue_invalid"] == 1


def test_a_worker_told_not_to_follow_a_catalogue_serves_the_trained_items(
    worker_factory: WorkerFactory,
):
    worker = worker_factory(catalogue_topic="").start()
    worker.wait_ready()
    assert worker.stats()["catalogue"] == {
        "read": True,
        "items": 0,
        "available": 0,
        "extra_items": 0,
        "blocked_items": 0,
    }
    assert len(items_of(list_for(worker, search(0, "Star Wars")))) == 20
