"""Faults the worker must ride out: hostile input, a slow model, a broker that refuses its
deliveries, a broker outage."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from stream.contracts.records import Event
from stream.settings import Settings
from stream.tools.cluster.broker import EmbeddedBroker, free_port
from stream.tools.cluster.worker_process import WorkerProcess, create_topics
from tests.conftest import WorkerFactory, worker_settings
from tests.integration.kafka_io import consume_until, produce, produce_events
from tests.integration.kafka_proxy import KafkaProxy
from tests.integration.workers import (
    assert_contexts_match_a_fold,
    commits_ahead_of_lists,
    duplicate_lists,
    lists_by_trigger,
    newest_lists,
    rss_mb,
    sample_events,
)


def test_ten_thousand_hostile_messages_between_good_traffic(
    broker: EmbeddedBroker, worker_factory: WorkerFactory, datasets_dir: Path
) -> None:
    from tests.integration.hostile import HUGE_BYTES, HUGE_EVERY, hostile_messages

    live = worker_factory().start()
    s = live.settings
    live.wait_ready()
    assert live.process is not None
    rss_before = rss_mb(live.process.pid)
    events = sample_events(datasets_dir, users=50, per_user=24)
    odd_user = "用户-🙂-عربى"  # valid but unusual: CJK, emoji, Arabic (ids must be printable)
    events += [
        Event("odd-1", odd_user, "click", 1_000, item_id="no-such-item"),  # unknown item
        Event("odd-2", odd_user, "search", 1_001, query="ñandú 🎬 \u0000 zero"),
        Event("odd-3", odd_user, "click", 1_002, item_id="50"),
    ]
    bad = hostile_messages(10_000)
    good = [e.to_message() for e in events]
    messages = [(key, value) for key, value, _ in bad]
    for i, message in enumerate(good):  # good traffic spread through the hostile stream
        messages.insert(i * 9, message)
    produce(broker.bootstrap_servers, s.events_topic, messages)
    last = {e.user_id: e.event_id for e in events}
    got = consume_until(
        broker.bootstrap_servers,
        [s.recommendations_topic, s.dlq_topic],
        lambda got: (
            len(got[s.dlq_topic]) >= len(bad)
            and set(last.values()) <= set(lists_by_trigger(got[s.recommendations_topic]))
        ),
        timeout=180,
    )
    assert live.process.poll() is None, live.log_text()[-3000:]  # no crash
    letters = [orjson.loads(v) for _, v in got[s.dlq_topic]]
    assert len(letters) == len(bad)
    reasons = Counter(letter["reason"] for letter in letters)
    expected = Counter(reason for _, _, reason in bad if reason is not None)
    assert not expected - reasons, expected - reasons  # each kind rejected for its reason
    # a safe prefix of each payload (16 KiB, base64), never a 70 KB or 1.2 MB one whole
    assert max(len(v) for _, v in got[s.dlq_topic]) < 25_000
    huge = [letter for letter in letters if letter["payload_bytes"] > HUGE_BYTES]
    assert len(huge) == len(bad) // HUGE_EVERY
    assert {(letter["reason"], letter["truncated"]) for letter in huge} == {("too_large", True)}
    lists = lists_by_trigger(got[s.recommendations_topic])
    assert set(last.values()) <= set(lists)  # good traffic still served
    assert all(len(lists[e].items) == s.top_k for e in last.values())
    growth = rss_mb(live.process.pid) - rss_before
    text = live.log_text()  # no payloads in the log, and one line per reason, not per message
    assert "x" * 100 not in text and "u" * 100 not in text and "\\ud800" not in text
    assert text.count("dead-lettered") <= 2 * len(reasons), text.count("dead-lettered")
    print(f"dead letters {len(letters)}, lists {len(lists)}, RSS growth {growth:.0f} MB")
    assert growth < 150, growth  # bounded: nothing of the bad input is kept


SLOW_SCORER = '''"""Test-only fault: every scoring call takes 300 ms longer than the model needs."""
import time

import stream.model.scorer

_score = stream.model.scorer.Scorer.score


def _slow(self, contexts):
    time.sleep(0.3)
    return _score(self, contexts)


stream.model.scorer.Scorer.score = _slow
'''


def test_a_slow_model_backs_up_into_kafka_not_into_memory(
    broker: EmbeddedBroker, worker_factory: WorkerFactory, datasets_dir: Path, tmp_path: Path
) -> None:
    """Inference far slower than arrivals: the backlog waits in the topic, memory stays flat."""
    fault = tmp_path / "slow-model"
    fault.mkdir()
    (fault / "sitecustomize.py").write_text(SLOW_SCORER)
    pythonpath = os.pathsep.join(p for p in (str(fault), os.environ.get("PYTHONPATH")) if p)
    live = worker_factory(env={"PYTHONPATH": pythonpath}, batch_max_users=16, batch_max_events=64)
    s = live.settings
    events = sample_events(datasets_dir, users=400, per_user=50)
    assert len(events) >= 15_000
    # the whole backlog waits before the worker starts (a restart behind a burst), so what the
    # worker reads ahead is its own doing, not a race with this test's producer
    produce_events(broker.bootstrap_servers, s.events_topic, events)
    live.start().wait_ready()
    assert live.process is not None
    rss_before = rss_mb(live.process.pid)
    last = {e.user_id: e.event_id for e in events}
    samples: list[tuple[float, int, int, float]] = []  # (t, lag, pending users, RSS MB)
    started = time.monotonic()
    while time.monotonic() - started < 240:
        body = live.stats()
        samples.append(
            (
                time.monotonic() - started,
                body["consumer_lag"],
                body["pending_users"],
                rss_mb(live.process.pid),
            )
        )
        if body["counters"].get("events_in", 0) >= len(events) and body["consumer_lag"] == 0:
            break
        time.sleep(0.25)
    got = consume_until(
        broker.bootstrap_servers,
        [s.recommendations_topic],
        lambda got: set(last.values()) <= set(lists_by_trigger(got[s.recommendations_topic])),
        timeout=60,
    )
    assert live.process.poll() is None, live.log_text()[-3000:]
    body = live.stats()
    counters, summaries = body["counters"], body["summaries"]
    lists = lists_by_trigger(got[s.recommendations_topic])
    assert set(last.values()) <= set(lists)  # nothing lost: every user's newest event served
    peak_lag = max(lag for _, lag, _, _ in samples)
    growth = max(rss for *_, rss in samples) - rss_before
    print(
        f"events {len(events)}, lists {counters['lists_out']}, coalesced "
        f"{counters.get('events_coalesced', 0)}, peak lag {peak_lag}, RSS growth {growth:.0f} MB, "
        f"drained in {samples[-1][0]:.0f} s"
    )
    # backpressure: the worker left most of the backlog in Kafka instead of reading it in (it
    # reads ahead only Faust's stream buffer, 4,096 events, and the batch it scores)
    assert peak_lag >= len(events) // 2, samples[:5]
    assert max(pending for _, _, pending, _ in samples) <= 16
    assert summaries["batch_users"]["max"] <= 16
    # graceful: a user's events that wait together are folded into one list
    assert counters.get("events_coalesced", 0) > 0 and counters["lists_out"] < len(events)
    assert growth < 100, samples


#: How long the faults below last: far longer than the producer's request timeout (5 s).
OUTAGE_S = 60.0


@contextmanager
def proxied_worker(
    tiny_model_dir: Path, tmp_path: Path, **overrides: Any
) -> Iterator[tuple[KafkaProxy, str, WorkerProcess]]:
    """A broker behind :class:`KafkaProxy`, and a worker that reaches it only through it.

    The worker's producer gives up on a batch after 5 s; ``overrides`` change other settings.
    """
    proxy_port = free_port()
    log = (tmp_path / "broker.log").open("wb")
    with (
        EmbeddedBroker(log_file=log, advertised_port=proxy_port) as real,
        KafkaProxy(real.port, proxy_port) as proxy,
    ):
        front = f"127.0.0.1:{proxy_port}"  # where clients are told to connect
        settings = worker_settings(
            f"kafka://{front}",
            tiny_model_dir,
            tmp_path,
            producer_request_timeout_s=5.0,
            **overrides,
        )
        create_topics(settings)
        live = WorkerProcess(settings, tmp_path).start()
        try:
            live.wait_ready()
            yield proxy, front, live
        finally:
            live.stop()


def wait_for_newest(front: str, s: Settings, events: list[Event], timeout: float = 180) -> None:
    """Wait until every user's newest event has a list."""
    last = {e.user_id: e.event_id for e in events}
    consume_until(
        front,
        [s.recommendations_topic],
        lambda got: set(last.values()) <= set(lists_by_trigger(got[s.recommendations_topic])),
        timeout=timeout,
    )


def assert_every_user_ends_on_their_last_event(
    front: str, live: WorkerProcess, events: list[Event]
) -> None:
    """Each user's newest list on the topic (and over HTTP) was made after their last event."""
    last = {e.user_id: e.event_id for e in events}
    newest = newest_lists(front, live.settings)
    stale = {u: newest[u].trigger_event_id if u in newest else None for u in last}
    stale = {u: t for u, t in stale.items() if t != last[u]}
    assert not stale, (len(stale), list(stale.items())[:5], live.log_text()[-3000:])
    assert_contexts_match_a_fold(live, events, list(last)[::10])


def test_deliveries_refused_for_a_minute_lose_nothing_and_commit_nothing_early(
    tiny_model_dir: Path, datasets_dir: Path, tmp_path: Path
) -> None:
    """The broker swallows the worker's Produce requests for 60 s; fetches and commits pass.

    200 users send 3 clicks each, two of them during the fault. Nothing may be committed
    ahead of its list, and afterwards every user's list reflects their last event.
    """
    with proxied_worker(tiny_model_dir, tmp_path) as (proxy, front, live):
        s = live.settings
        events = sample_events(datasets_dir, users=200, per_user=3)
        first = {e.user_id: e for e in reversed(events)}  # each user's first event
        before = [e for e in events if first[e.user_id] is e]
        during = [e for e in events if first[e.user_id] is not e]
        produce_events(front, s.events_topic, before)
        wait_for_newest(front, s, before)
        proxy.drop_produce("faust")  # the worker's clients: Produce swallowed, the rest passes
        dropped_at = time.monotonic()
        produce_events(front, s.events_topic, during)  # this test's own producer is untouched
        time.sleep(max(0.0, OUTAGE_S - 5 - (time.monotonic() - dropped_at)))
        assert live.process is not None and live.process.poll() is None, live.log_text()[-3000:]
        stalled = live.stats()
        ahead = commits_ahead_of_lists(front, s, events)  # nothing new can be delivered now
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - dropped_at)))
        proxy.restore()
        restored_at = time.monotonic()
        wait_for_newest(front, s, events)
        caught_up_s = time.monotonic() - restored_at
        assert not ahead, f"{len(ahead)} events committed before their list: {ahead[:5]}"
        assert stalled["counters"]["events_in"] > len(before)  # it went on reading
        assert stalled["consumer_lag"] > 0  # the stall shows, though events were read
        assert_every_user_ends_on_their_last_event(front, live, events)
        counters = live.stats()["counters"]
        assert counters["delivery_failures"] > 0 and counters["deliveries_retried"] > 0
        assert proxy.dropped > 0
        duplicates = duplicate_lists(front, s)
        print(
            f"produce dropped {OUTAGE_S:.0f} s: {len(events)} events ({len(during)} during), "
            f"{proxy.dropped} Produce requests swallowed, lag at the end of the fault "
            f"{stalled['consumer_lag']} (read lag {stalled['read_lag']}, pending deliveries "
            f"{stalled['pending_deliveries']}), delivery_failures "
            f"{counters['delivery_failures']}, deliveries_retried {counters['deliveries_retried']}"
            f", lost 0, duplicate lists {duplicates}, caught up {caught_up_s:.1f} s after"
        )


def test_deliveries_refused_past_the_delivery_timeout_stop_the_worker_and_skip_nothing(
    tiny_model_dir: Path, datasets_dir: Path, tmp_path: Path
) -> None:
    """With STREAMREC_DELIVERY_TIMEOUT_S=5 the worker gives up: exit 1 and one line. Started
    again once the broker takes records, it serves every event it had not acknowledged."""
    with proxied_worker(tiny_model_dir, tmp_path, delivery_timeout_s=5.0) as (proxy, front, live):
        s = live.settings
        events = sample_events(datasets_dir, users=50, per_user=4)
        proxy.drop_produce("faust")
        produce_events(front, s.events_topic, events)
        assert live.process is not None
        code = live.process.wait(120)
        text = live.log_text()
        assert code == 1, text[-3000:]
        said = [line for line in text.splitlines() if "streamrec: delivery confirmer died" in line]
        assert len(said) == 1 and "STREAMREC_DELIVERY_TIMEOUT_S" in said[0], text[-3000:]
        assert commits_ahead_of_lists(front, s, events) == []
        proxy.restore()
        live.start().wait_ready()
        wait_for_newest(front, s, events)
        assert_every_user_ends_on_their_last_event(front, live, events)
        print(f"gave up after the delivery timeout: exit {code}; {said[0].split('] ', 2)[-1]}")


def test_a_broker_outage_loses_nothing_and_the_worker_catches_up(
    tiny_model_dir: Path, datasets_dir: Path, tmp_path: Path
) -> None:
    """Every connection of the worker is cut for 60 s while events keep arriving."""
    with proxied_worker(tiny_model_dir, tmp_path) as (proxy, front, live):
        s = live.settings
        events = sample_events(datasets_dir, users=60, per_user=30)
        third = len(events) // 3
        before, during, after = events[:third], events[third : 2 * third], events[2 * third :]
        produce_events(front, s.events_topic, before)
        wait_for_newest(front, s, before)
        in_before = live.stats()["counters"]["events_in"]
        proxy.cut("faust")  # the worker's clients only: producers and readers still reach it
        cut_at = time.monotonic()
        produce_events(front, s.events_topic, during)  # events keep arriving meanwhile
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - cut_at)))
        assert live.process is not None and live.process.poll() is None, live.log_text()[-3000:]
        stalled = live.stats()
        assert stalled["counters"]["events_in"] == in_before  # nothing read through the cut
        ahead = commits_ahead_of_lists(front, s, before + during)
        proxy.restore()
        restored_at = time.monotonic()
        produce_events(front, s.events_topic, after)
        lags: list[int] = []

        def caught_up(got: dict) -> bool:
            lags.append(live.stats()["consumer_lag"])
            last = {e.user_id: e.event_id for e in events}
            return set(last.values()) <= set(lists_by_trigger(got[s.recommendations_topic]))

        consume_until(front, [s.recommendations_topic], caught_up, timeout=180)
        recovery_s = time.monotonic() - restored_at
        assert live.process.poll() is None, live.log_text()[-3000:]
        assert not ahead, f"{len(ahead)} events committed before their list: {ahead[:5]}"
        assert_every_user_ends_on_their_last_event(front, live, events)
        assert proxy.refused > 0  # the worker did try to reconnect during the cut
        counters = live.stats()["counters"]
        print(
            f"all connections cut {OUTAGE_S:.0f} s: {len(events)} events ({len(during)} during), "
            f"refused connections {proxy.refused}, delivery_failures "
            f"{counters.get('delivery_failures', 0)}, deliveries_retried "
            f"{counters.get('deliveries_retried', 0)}, lost 0, duplicate lists "
            f"{duplicate_lists(front, s)}, caught up {recovery_s:.1f} s after the link "
            f"returned, peak lag seen {max(lags)}"
        )


def test_a_broker_restart_with_durable_storage_loses_nothing(
    tiny_model_dir: Path, datasets_dir: Path, tmp_path: Path
) -> None:
    """The broker (its log in S3 on SeaweedFS) stops mid-stream for 10 s and starts again.

    It stops while the worker is a tenth of the way through a 3,000-event backlog.

    The worker reconnects, resumes from its committed offsets, and every user's newest list
    reflects their last event.
    """
    from tests.integration.object_store import running_object_store

    with running_object_store(tmp_path / "s3", tmp_path / "seaweedfs.log") as store:
        log = (tmp_path / "broker.log").open("ab")
        broker = EmbeddedBroker(
            free_port(), log_file=log, storage=store.tansu_storage, env=store.env
        ).start()
        try:
            settings = worker_settings(broker.url, tiny_model_dir, tmp_path)
            create_topics(settings)
            live = WorkerProcess(settings, tmp_path).start()
            try:
                live.wait_ready(timeout=180)
                s = live.settings
                events = sample_events(datasets_dir, users=150, per_user=40)
                half = len(events) // 2
                produce_events(broker.bootstrap_servers, s.events_topic, events[:half])
                in_at_stop = 0
                while in_at_stop < 300:  # stop mid-stream: scoring, delivering, committing
                    in_at_stop = live.stats()["counters"].get("events_in", 0)
                    time.sleep(0.02)
                broker.stop()
                time.sleep(10.0)
                assert live.process is not None and live.process.poll() is None
                broker.start()
                restarted_at = time.monotonic()
                produce_events(broker.bootstrap_servers, s.events_topic, events[half:])
                wait_for_newest(broker.bootstrap_servers, s, events, timeout=240)
                caught_up_s = time.monotonic() - restarted_at
                assert live.process.poll() is None, live.log_text()[-3000:]
                assert_every_user_ends_on_their_last_event(broker.bootstrap_servers, live, events)
                counters = live.stats()["counters"]
                print(
                    f"broker restarted (S3 storage) after {in_at_stop} of {half} events read: "
                    f"{len(events)} events, lost 0, duplicate lists "
                    f"{duplicate_lists(broker.bootstrap_servers, s)}, delivery_failures "
                    f"{counters.get('delivery_failures', 0)}, deliveries_retried "
                    f"{counters.get('deliveries_retried', 0)}, caught up {caught_up_s:.1f} s "
                    "after the restart"
                )
            finally:
                live.stop()
        finally:
            broker.stop()


BROKEN_CATALOGUE = '''"""Test-only fault: building the catalogue's item set at start-up raises."""
import stream.processing.pipeline


async def _broken(self):
    raise RuntimeError("injected: the item set cannot be built")


stream.processing.pipeline.ScoringPipeline.follow_catalogue = _broken
'''


def test_a_dying_catalogue_follower_stops_the_worker_naming_it(
    worker_factory: WorkerFactory, tmp_path: Path
) -> None:
    """Its catch-up raises: /live/ answers 503, then the worker exits 1 with one line."""
    fault = tmp_path / "broken-catalogue"
    fault.mkdir()
    (fault / "sitecustomize.py").write_text(BROKEN_CATALOGUE)
    pythonpath = os.pathsep.join(p for p in (str(fault), os.environ.get("PYTHONPATH")) if p)
    live = worker_factory(env={"PYTHONPATH": pythonpath}).start()
    assert live.process is not None
    probes: list[tuple[int, object]] = []
    deadline = time.monotonic() + 120
    while live.process.poll() is None and time.monotonic() < deadline:
        try:
            probes.append(live.get_json("/live/", timeout=1))
        except OSError:  # not listening yet, or gone
            pass
        time.sleep(0.05)
    code = live.process.wait(30)
    text = live.log_text()
    assert code == 1, text[-3000:]
    dead = [body for status, body in probes if status == 503]
    assert dead, probes[-5:]
    injected = "RuntimeError: injected: the item set cannot be built"
    assert dead[0] == {"live": False, "dead_tasks": {"catalogue follower": injected}}
    assert "streamrec: catalogue follower died (RuntimeError: injected" in text, text[-3000:]
