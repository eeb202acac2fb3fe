"""Faults the worker must ride out: hostile input, a slow model, a broker outage."""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from stream.records import Event
from stream.tools.broker import EmbeddedBroker, free_port
from stream.tools.worker_process import WorkerProcess, create_topics
from tests.conftest import WorkerFactory, worker_settings
from tests.kafka_io import consume_until, produce, produce_events
from tests.workers import assert_contexts_match_a_fold, lists_by_trigger, rss_mb, sample_events


def test_ten_thousand_hostile_messages_between_good_traffic(
    broker: EmbeddedBroker, worker_factory: WorkerFactory, datasets_dir: Path
) -> None:
    from tests.hostile import HUGE_BYTES, HUGE_EVERY, hostile_messages

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

import stream.scorer

_score = stream.scorer.Scorer.score


def _slow(self, contexts):
    time.sleep(0.3)
    return _score(self, contexts)


stream.scorer.Scorer.score = _slow
'''


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_broker_outage_loses_nothing_and_the_worker_catches_up(
    tiny_model_dir: Path, datasets_dir: Path, tmp_path: Path
) -> None:
    """The worker's link to the broker is cut for 15 s while events keep arriving."""
    from tests.kafka_proxy import KafkaProxy

    proxy_port = free_port()
    log = (tmp_path / "broker.log").open("wb")
    with (
        EmbeddedBroker(log_file=log, advertised_port=proxy_port) as real,
        KafkaProxy(real.port, proxy_port) as proxy,
    ):
        front = f"127.0.0.1:{proxy_port}"  # where clients are told to connect
        settings = worker_settings(f"kafka://{front}", tiny_model_dir, tmp_path)
        create_topics(settings)
        live = WorkerProcess(settings, tmp_path).start()
        try:
            s = live.settings
            live.wait_ready()
            events = sample_events(datasets_dir, users=60, per_user=30)
            third = len(events) // 3
            before, during, after = events[:third], events[third : 2 * third], events[2 * third :]

            def send(batch: list[Event]) -> None:
                produce_events(front, s.events_topic, batch)

            send(before)
            last_before = {e.user_id: e.event_id for e in before}
            consume_until(
                front,
                [s.recommendations_topic],
                lambda got: (
                    set(last_before.values()) <= set(lists_by_trigger(got[s.recommendations_topic]))
                ),
            )
            in_before = live.stats()["counters"]["events_in"]
            proxy.cut("faust")  # the worker's clients only: producers and readers still reach it
            cut_at = time.monotonic()
            send(during)  # events keep arriving while the worker cannot see the broker
            time.sleep(max(0.0, 15.0 - (time.monotonic() - cut_at)))
            assert live.process is not None and live.process.poll() is None, live.log_text()[-3000:]
            stalled = live.stats()
            assert stalled["counters"]["events_in"] == in_before  # nothing read through the cut
            proxy.restore()
            restored_at = time.monotonic()
            send(after)
            last = {e.user_id: e.event_id for e in events}
            lags = []

            def caught_up(got) -> bool:
                lags.append(live.stats()["consumer_lag"])
                return set(last.values()) <= set(lists_by_trigger(got[s.recommendations_topic]))

            got = consume_until(front, [s.recommendations_topic], caught_up, timeout=180)
            recovery_s = time.monotonic() - restored_at
            assert live.process.poll() is None, live.log_text()[-3000:]
            lists = lists_by_trigger(got[s.recommendations_topic])
            assert set(last.values()) <= set(lists), live.log_text()[-3000:]
            assert_contexts_match_a_fold(live, events, list(last)[::6])
            print(
                f"events {len(events)} ({len(during)} during the 15 s cut), lists "
                f"{len(got[s.recommendations_topic])}, refused connections {proxy.refused}, "
                f"caught up {recovery_s:.1f} s after the link returned, peak lag seen {max(lags)}"
            )
            assert proxy.refused > 0  # the worker did try to reconnect during the cut
        finally:
            live.stop()
