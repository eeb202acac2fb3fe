"""A worker that stops, or is killed, and starts again: nothing it knew or owed is lost."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from stream.contracts.records import Event, Recommendation
from stream.tools.cluster.broker import EmbeddedBroker
from tests.conftest import WorkerFactory
from tests.integration.kafka_io import consume_until, produce_events
from tests.integration.workers import (
    assert_contexts_match_a_fold,
    changelog_records,
    group_offsets,
    lists_by_trigger,
    sample_events,
    serve,
    task_dump,
    where_missing,
)


def test_restarted_worker_recovers_context_from_changelog(
    broker: EmbeddedBroker, worker_factory: WorkerFactory, datasets_dir: Path
) -> None:
    events = sample_events(datasets_dir, users=10, per_user=8)
    first = worker_factory().start()
    s = first.settings
    serve(broker, s, events)
    assert first.stop() == 0, first.log_text()[-3000:]
    second = first.start()  # same app id, topics and port; a new process with empty memory
    user = events[0].user_id
    expected = [ev.event_id for ev in events if ev.user_id == user]
    bought = {ev.item_id for ev in events if ev.user_id == user and ev.type == "purchase"}
    second.wait_ready()
    counters = second.stats()["counters"]
    written = changelog_records(broker, s)  # one per user per scoring batch, not per event
    assert 0 < written <= len(events)
    assert counters["changelog_records_applied"] >= written  # memory store: all of it
    status, body = second.get_json(f"/context/{user}/")
    assert status == 200, second.log_text()[-3000:]
    assert [e[0] for e in body["events"]] == expected, body
    assert set(body["purchased"]) == bought
    # every event was read and committed before the stop: after the seek to the committed
    # offsets, nothing counts as unread (Faust then holds the next offset, not the last read)
    deadline = time.monotonic() + 15
    while (lag := second.stats()["consumer_lag"]) != 0:
        assert time.monotonic() < deadline, (lag, second.log_text()[-3000:])
        time.sleep(0.5)

    # the recovered context keeps excluding what the user bought before the restart
    probe = Event("after-restart", user, "click", int(time.time() * 1000), item_id="1")
    produce_events(broker.bootstrap_servers, s.events_topic, [probe])
    got = consume_until(
        broker.bootstrap_servers,
        [s.recommendations_topic],
        lambda got: "after-restart" in lists_by_trigger(got[s.recommendations_topic]),
    )
    rec = lists_by_trigger(got[s.recommendations_topic])["after-restart"]
    assert not bought & {item for item, _ in rec.items}


def test_a_rocksdb_store_restart_replays_only_the_new_changelog(
    broker: EmbeddedBroker, worker_factory: WorkerFactory, datasets_dir: Path
) -> None:
    events = sample_events(datasets_dir, users=20, per_user=10)
    first = worker_factory(store="rocksdb://").start()
    s = first.settings
    first.wait_ready()
    last = serve(broker, s, events)
    assert first.stop() == 0, first.log_text()[-3000:]
    assert any((Path(s.data_dir)).rglob("*.sst")) or any(Path(s.data_dir).rglob("CURRENT"))
    second = first.start()  # the same data directory: the table is on disk
    second.wait_ready()
    applied = second.stats()["counters"].get("changelog_records_applied", 0)
    print(f"changelog records {len(events)}, applied at the restart {applied}")
    assert applied <= len(events) // 10, second.log_text()[-3000:]
    assert_contexts_match_a_fold(second, events, list(last)[::4])


@pytest.mark.parametrize(
    ("kill_when", "commit_interval_s"),
    [("before_first_commit", 600.0), ("after_commits", 0.5)],
)
def test_kill_9_mid_stream_loses_no_context_and_no_list(
    broker: EmbeddedBroker,
    worker_factory: WorkerFactory,
    datasets_dir: Path,
    kill_when,
    commit_interval_s,
) -> None:
    events = sample_events(datasets_dir, users=100, per_user=40)
    assert len(events) >= 3000
    first = worker_factory(commit_interval_s=commit_interval_s).start()
    s = first.settings
    first.wait_ready()
    # mid-stream: a first quarter is handled (a list for each of its users' newest events,
    # offsets committed), then the rest is produced and the worker killed at once (it handles
    # thousands of events a second)
    head = len(events) // 4
    serve(broker, s, events[:head])
    if kill_when == "after_commits":
        deadline = time.monotonic() + 30
        while not any(group_offsets(broker, s.app_id, s.events_topic)["committed"].values()):
            assert time.monotonic() < deadline, "no offset committed:\n" + first.log_text()[-3000:]
            time.sleep(0.2)
    produce_events(broker.bootstrap_servers, s.events_topic, events[head:])
    killed_at = time.time_ns() // 1_000_000
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    at_kill = group_offsets(broker, s.app_id, s.events_topic)
    committed = {p: at for p, at in at_kill["committed"].items() if at}
    assert bool(committed) == (kill_when == "after_commits"), at_kill
    assert sum(committed.values()) < sum(at_kill["end"].values()), at_kill  # mid-stream
    restarted = time.monotonic()
    second = first.start()  # same group, topics and changelog; a new process with empty memory
    second.wait_ready(timeout=90)
    recovery_s = time.monotonic() - restarted
    last = {e.user_id: e.event_id for e in events}
    got = consume_until(
        broker.bootstrap_servers,
        [s.recommendations_topic],
        lambda got: set(last.values()) <= set(lists_by_trigger(got[s.recommendations_topic])),
    )
    caught_up_s = time.monotonic() - restarted
    received = [Recommendation.from_json(v) for _, v in got[s.recommendations_topic]]
    # at-least-once: every user's newest event is reflected by a list; duplicates share a trigger
    missing = set(last.values()) - {r.trigger_event_id for r in received}
    assert not missing, (
        len(missing),
        second.stats()["counters"],
        {"at_kill": at_kill["committed"]},
        task_dump(second),
        group_offsets(broker, s.app_id, s.events_topic),
        where_missing(broker, s, missing, events, received, killed_at),
    )
    duplicates = len(received) - len({r.trigger_event_id for r in received})
    counters = second.stats()["counters"]
    print(
        f"kill -9 {kill_when}: events {len(events)}, committed at kill {sum(committed.values())}, "
        f"lists {len(received)}, duplicate triggers {duplicates}, "
        f"changelog records applied {counters.get('changelog_records_applied')}, "
        f"ready after {recovery_s:.1f} s, caught up after {caught_up_s:.1f} s"
    )
    # every user's context equals the crash-free fold of their events
    assert_contexts_match_a_fold(second, events, list(last))
