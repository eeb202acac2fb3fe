"""The worker end to end on the embedded broker: real Kafka protocol, real ONNX model."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path

import jsonschema
import orjson
import pytest

from model_export.data import movielens_events
from stream.broker import EmbeddedBroker
from stream.context import UserContext
from stream.manifest import load_manifest
from stream.records import Event, Recommendation
from tests.conftest import Worker
from tests.kafka_io import consume_until, produce

SCHEMAS = Path(__file__).resolve().parents[2] / "stream" / "schemas"

MALFORMED: list[tuple[bytes | None, bytes, str]] = [
    (b"u1", b"not json", "not_json"),
    (b"u1", b"[1, 2]", "not_an_object"),
    (b"u1", b'{"event_id":"x1","type":"click","item_id":"1","ts":1}', "missing_user_id"),
    (b"u1", b'{"event_id":"x2","user_id":"u1","type":"view","item_id":"1","ts":1}', "bad_type"),
    (b"u1", b'{"event_id":"x3","user_id":"u1","type":"click","ts":1}', "missing_item_id"),
    (b"u1", b'{"event_id":"x4","user_id":"u1","type":"search","ts":1}', "missing_query"),
    (b"u1", b'{"event_id":"x5","user_id":"u1","type":"click","item_id":"1","ts":"now"}', "bad_ts"),
    (
        b"zz",
        b'{"event_id":"x6","user_id":"u1","type":"click","item_id":"1","ts":1}',
        "key_mismatch",
    ),
    (
        b"u1",
        b'{"event_id":"x7","user_id":"u1","type":"click","item_id":"1","ts":1,"x":1}',
        "unknown_field",
    ),
    (b"u1", b'{"pad":"' + b"a" * 70_000 + b'"}', "too_large"),
    (b"u1", b"", "empty_message"),
    (None, b'{"event_id":"x8","user_id":"u1","type":"click","item_id":"1","ts":1}', "key_mismatch"),
]


def sample_events(datasets_dir: Path, users: int, per_user: int) -> list[Event]:
    """Real MovieLens events: the first ``per_user`` of the first ``users`` users seen."""
    taken: dict[str, int] = defaultdict(int)
    chosen = []
    for ev in movielens_events(datasets_dir):
        if ev.user_id not in taken and len(taken) >= users:
            continue
        if taken[ev.user_id] < per_user:
            taken[ev.user_id] += 1
            chosen.append(ev)
    return chosen


def lists_by_trigger(received: list[tuple[bytes | None, bytes]]) -> dict[str, Recommendation]:
    return {r.trigger_event_id: r for r in (Recommendation.from_json(v) for _, v in received)}


def get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback only
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def wait_until_ready(worker: Worker, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if get_json(f"{worker.web}/stats/")[1].get("ready"):
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise AssertionError("worker not ready:\n" + worker.log_text()[-3000:])


@pytest.fixture(scope="module")
def worker(broker: EmbeddedBroker, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    running = Worker(broker, tiny_model_dir, tmp_path_factory.mktemp("worker")).start()
    yield running
    assert running.stop() == 0, running.log_text()[-3000:]


def test_every_user_gets_valid_lists_and_bad_input_goes_to_dlq(
    broker: EmbeddedBroker, worker: Worker, datasets_dir: Path, tiny_model_dir: Path
) -> None:
    events = sample_events(datasets_dir, users=60, per_user=12)
    assert len(events) >= 500
    messages: list[tuple[bytes | None, bytes]] = [
        (ev.user_id.encode(), ev.to_json()) for ev in events
    ]
    for i, (key, value, _) in enumerate(MALFORMED):  # interleave bad with good traffic
        messages.insert(i * 50, (key, value))
    s = worker.settings
    produce(broker.bootstrap_servers, s.events_topic, messages)

    last_event = {ev.user_id: ev.event_id for ev in events}
    received = consume_until(
        broker.bootstrap_servers,
        [s.recommendations_topic, s.dlq_topic],
        lambda got: (
            set(last_event.values()) <= set(lists_by_trigger(got[s.recommendations_topic]))
            and len(got[s.dlq_topic]) >= len(MALFORMED)
        ),
    )
    lists = [Recommendation.from_json(v) for _, v in received[s.recommendations_topic]]
    by_trigger = lists_by_trigger(received[s.recommendations_topic])
    assert set(last_event.values()) <= set(by_trigger), worker.log_text()[-3000:]
    assert {r.user_id for r in lists} == set(last_event)

    vocabulary = set(load_manifest(tiny_model_dir).items)
    purchased: dict[str, set[str]] = defaultdict(set)
    position = {ev.event_id: i for i, ev in enumerate(events)}
    for rec in lists:
        ids = [item for item, _ in rec.items]
        assert len(ids) == s.top_k == len(set(ids))
        assert set(ids) <= vocabulary
        scores = [score for _, score in rec.items]
        assert scores == sorted(scores, reverse=True)
        # nothing the user purchased up to the trigger event may be recommended
        bought = {
            ev.item_id
            for ev in events[: position[rec.trigger_event_id] + 1]
            if ev.user_id == rec.user_id and ev.type == "purchase"
        }
        assert not bought & set(ids), (rec.user_id, bought & set(ids))
        purchased[rec.user_id] |= bought
    assert any(purchased.values())  # the check above had purchases to exclude

    schema = json.loads((SCHEMAS / "recommendation.v1.json").read_text())
    for _, value in received[s.recommendations_topic][:50]:
        jsonschema.validate(orjson.loads(value), schema)

    letters = [orjson.loads(v) for _, v in received[s.dlq_topic]]
    dlq_schema = json.loads((SCHEMAS / "dead_letter.v1.json").read_text())
    for letter in letters:
        jsonschema.validate(letter, dlq_schema)
    assert sorted(x["reason"] for x in letters) == sorted(r for _, _, r in MALFORMED)
    status, stats = get_json(f"{worker.web}/stats/")
    assert status == 200
    assert stats["counters"]["events_invalid"] == len(MALFORMED)
    assert stats["counters"]["lists_out"] >= len(last_event)


def scrape(worker: Worker) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` parsed by Prometheus' own parser: (sample name, labels) → value."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{worker.web}/metrics", timeout=10) as response:  # noqa: S310
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_endpoint_and_probes_after_traffic(worker: Worker) -> None:
    """Runs after the test above, on the same worker: its traffic shows in the counters."""
    samples = scrape(worker)
    value = {name: v for (name, labels), v in samples.items() if not labels}
    assert value["streamrec_events_in_total"] >= 500
    assert value["streamrec_lists_out_total"] >= 60
    assert value["streamrec_events_invalid_total"] == len(MALFORMED)
    assert sum(v for (n, _), v in samples.items() if n == "streamrec_dlq_reason_total") == len(
        MALFORMED
    )
    assert value["streamrec_batch_users_count"] > 0
    assert value["streamrec_inference_seconds_count"] > 0
    assert value["streamrec_event_to_list_seconds_count"] >= 60
    assert value["streamrec_ready"] == 1 and value["streamrec_table_users"] >= 60
    assert "streamrec_consumer_lag" in value
    model = [dict(labels) for (n, labels), _ in samples.items() if n == "streamrec_model_info"]
    assert model and model[0]["provider"] == "CPUExecutionProvider"
    faust = [n for n, _ in samples if n.startswith("faust_")]
    assert any(n.startswith("faust_messages_received") for n in faust), sorted(set(faust))
    assert get_json(f"{worker.web}/ready/") == (200, {"ready": True})
    assert get_json(f"{worker.web}/live/") == (200, {"live": True})


def test_librdkafka_client_feeds_events_and_reads_lists(
    broker: EmbeddedBroker, worker: Worker
) -> None:
    confluent_kafka = pytest.importorskip("confluent_kafka")
    s = worker.settings
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": broker.bootstrap_servers, "partitioner": "murmur2_random"}
    )
    now = int(time.time() * 1000)
    for i in range(5):
        ev = Event(f"ck-{i}", f"ck-user-{i}", "click", now, item_id=str(100 + i))
        producer.produce(s.events_topic, key=ev.user_id.encode(), value=ev.to_json())
    assert producer.flush(30) == 0

    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": "ck-reader",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([s.recommendations_topic])
    wanted, seen = {f"ck-{i}" for i in range(5)}, set()
    deadline = time.monotonic() + 60
    try:
        while wanted - seen and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            rec = Recommendation.from_json(msg.value())
            if rec.trigger_event_id in wanted:
                assert msg.key() == rec.user_id.encode()
                seen.add(rec.trigger_event_id)
    finally:
        consumer.close()
    assert seen == wanted


@pytest.mark.slow
def serve(broker: EmbeddedBroker, s, events: list[Event]) -> dict[str, str]:
    """Produce ``events``; wait until each user's newest one has a list. Returns user → it."""
    produce(
        broker.bootstrap_servers,
        s.events_topic,
        [(e.user_id.encode(), e.to_json()) for e in events],
    )
    last = {ev.user_id: ev.event_id for ev in events}
    consume_until(
        broker.bootstrap_servers,
        [s.recommendations_topic],
        lambda got: set(last.values()) <= set(lists_by_trigger(got[s.recommendations_topic])),
    )
    return last


def test_restarted_worker_recovers_context_from_changelog(
    broker: EmbeddedBroker, worker_factory, datasets_dir: Path
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
    wait_until_ready(second)
    counters = get_json(f"{second.web}/stats/")[1]["counters"]
    assert counters["changelog_records_applied"] >= len(events)  # memory store: all of it
    status, body = get_json(f"{second.web}/context/{user}/")
    assert status == 200, second.log_text()[-3000:]
    assert [e[0] for e in body["events"]] == expected, body
    assert set(body["purchased"]) == bought

    # the recovered context keeps excluding what the user bought before the restart
    probe = Event("after-restart", user, "click", int(time.time() * 1000), item_id="1")
    produce(broker.bootstrap_servers, s.events_topic, [(user.encode(), probe.to_json())])
    got = consume_until(
        broker.bootstrap_servers,
        [s.recommendations_topic],
        lambda got: "after-restart" in lists_by_trigger(got[s.recommendations_topic]),
    )
    rec = lists_by_trigger(got[s.recommendations_topic])["after-restart"]
    assert not bought & {item for item, _ in rec.items}


def test_a_rocksdb_store_restart_replays_only_the_new_changelog(
    broker: EmbeddedBroker, worker_factory, datasets_dir: Path
) -> None:
    events = sample_events(datasets_dir, users=20, per_user=10)
    first = worker_factory(STREAMREC_STORE="rocksdb://").start()
    s = first.settings
    wait_until_ready(first)
    last = serve(broker, s, events)
    assert first.stop() == 0, first.log_text()[-3000:]
    assert any((Path(s.data_dir)).rglob("*.sst")) or any(Path(s.data_dir).rglob("CURRENT"))
    second = first.start()  # the same data directory: the table is on disk
    wait_until_ready(second)
    applied = get_json(f"{second.web}/stats/")[1]["counters"].get("changelog_records_applied", 0)
    print(f"changelog records {len(events)}, applied at the restart {applied}")
    assert applied <= len(events) // 10, second.log_text()[-3000:]
    assert_contexts_match_a_fold(second, events, list(last)[::4])


@pytest.mark.parametrize("damage", ["missing", "tampered"])
def test_worker_refuses_a_model_directory_it_cannot_serve(damage, tiny_model_dir, tmp_path):
    model_dir = tmp_path / "model"
    if damage == "tampered":
        shutil.copytree(tiny_model_dir, model_dir)
        with (model_dir / "ranker.onnx").open("ab") as fh:
            fh.write(b"\0")
    result = subprocess.run(
        [sys.executable, "-m", "stream", "worker"],
        env={
            **os.environ,
            "STREAMREC_MODEL_DIR": str(model_dir),
            "STREAMREC_BROKER": "kafka://127.0.0.1:9",
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    assert "cannot start the worker" in result.stderr
    assert ("make model" if damage == "missing" else "ranker.onnx has sha256") in (result.stderr)


def test_a_new_model_version_takes_over_without_a_restart(
    broker: EmbeddedBroker, worker_factory, datasets_dir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    live = worker_factory(STREAMREC_MODEL_DIR=str(model), STREAMREC_MODEL_RELOAD_S="0.5").start()
    s = live.settings
    wait_until_ready(live)
    events = sample_events(datasets_dir, users=20, per_user=20)
    before, after = events[: len(events) // 2], events[len(events) // 2 :]
    produce(
        broker.bootstrap_servers,
        s.events_topic,
        [(e.user_id.encode(), e.to_json()) for e in before],
    )
    old = load_manifest(model).model_version

    # a half-written directory (manifest naming a file being copied) is not taken up
    (model / "ranker.onnx").write_bytes(b"partial copy")
    manifest = orjson.loads((model / "manifest.json").read_bytes())
    manifest["model_version"] = "reloaded-v2"
    (model / "manifest.json.tmp").write_bytes(orjson.dumps(manifest))
    (model / "manifest.json.tmp").replace(model / "manifest.json")
    time.sleep(2)
    assert get_json(f"{live.web}/stats/")[1]["model_version"] == old
    # the copy completes: the worker switches without a restart
    shutil.copyfile(tiny_model_dir / "ranker.onnx", model / "ranker.onnx")
    deadline = time.monotonic() + 30
    while get_json(f"{live.web}/stats/")[1]["model_version"] != "reloaded-v2":
        assert time.monotonic() < deadline, live.log_text()[-3000:]
        time.sleep(0.2)

    produce(
        broker.bootstrap_servers, s.events_topic, [(e.user_id.encode(), e.to_json()) for e in after]
    )
    # a user's events scored in one batch share one list (the newest's): check each user's last
    last_before = {e.user_id: e.event_id for e in before}
    last_after = {e.user_id: e.event_id for e in after}
    wanted = set(last_before.values()) | set(last_after.values())
    got = consume_until(
        broker.bootstrap_servers,
        [s.recommendations_topic],
        lambda got: wanted <= set(lists_by_trigger(got[s.recommendations_topic])),
    )
    lists = lists_by_trigger(got[s.recommendations_topic])
    assert wanted <= set(lists)  # every user's events are reflected across the switch
    assert {lists[e].model_version for e in last_before.values()} == {old}
    after_ids = {e.event_id for e in after}
    assert {r.model_version for t, r in lists.items() if t in after_ids} == {"reloaded-v2"}
    text = live.log_text()
    assert "cannot be served yet" in text and "now serving model reloaded-v2" in text


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kill_when", "commit_interval_s"), [("before_first_commit", "600"), ("after_commits", "0.5")]
)
def test_kill_9_mid_stream_loses_no_context_and_no_list(
    broker: EmbeddedBroker, worker_factory, datasets_dir: Path, kill_when, commit_interval_s
) -> None:
    events = sample_events(datasets_dir, users=100, per_user=40)
    assert len(events) >= 3000
    first = worker_factory(STREAMREC_COMMIT_INTERVAL_S=commit_interval_s).start()
    s = first.settings
    wait_until_ready(first)
    produce(
        broker.bootstrap_servers,
        s.events_topic,
        [(e.user_id.encode(), e.to_json()) for e in events],
    )
    consume_until(  # mid-stream: some lists are out, most events are not yet handled
        broker.bootstrap_servers,
        [s.recommendations_topic],
        lambda got: len(got[s.recommendations_topic]) >= 100,
    )
    if kill_when == "after_commits":
        deadline = time.monotonic() + 30
        while not any(group_offsets(broker, s.app_id, s.events_topic)["committed"].values()):
            assert time.monotonic() < deadline, "no offset committed:\n" + first.log_text()[-3000:]
            time.sleep(0.2)
    killed_at = time.time_ns() // 1_000_000
    assert first.stop(signal.SIGKILL) == -signal.SIGKILL
    at_kill = group_offsets(broker, s.app_id, s.events_topic)
    committed = {p: at for p, at in at_kill["committed"].items() if at}
    assert bool(committed) == (kill_when == "after_commits"), at_kill
    assert sum(committed.values()) < sum(at_kill["end"].values()), at_kill  # mid-stream
    restarted = time.monotonic()
    second = first.start()  # same group, topics and changelog; a new process with empty memory
    wait_until_ready(second, timeout=90)
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
        get_json(f"{second.web}/stats/")[1]["counters"],
        {"at_kill": at_kill["committed"]},
        task_dump(second),
        group_offsets(broker, s.app_id, s.events_topic),
        where_missing(broker, s, missing, events, received, killed_at),
    )
    duplicates = len(received) - len({r.trigger_event_id for r in received})
    counters = get_json(f"{second.web}/stats/")[1]["counters"]
    print(
        f"kill -9 {kill_when}: events {len(events)}, committed at kill {sum(committed.values())}, "
        f"lists {len(received)}, duplicate triggers {duplicates}, "
        f"changelog records applied {counters.get('changelog_records_applied')}, "
        f"ready after {recovery_s:.1f} s, caught up after {caught_up_s:.1f} s"
    )
    # every user's context equals the crash-free fold of their events
    assert_contexts_match_a_fold(second, events, list(last))


def task_dump(worker: Worker) -> str:
    """Every asyncio task's stack, which mode's worker logs on SIGUSR1 (for failure messages)."""
    assert worker.process is not None
    size = worker.log_path.stat().st_size
    worker.process.send_signal(signal.SIGUSR1)
    time.sleep(3)
    text = worker.log_text()[size:]
    keep = [block for block in text.split("Task") if "stream/" in block or "faust/" in block]
    return "Task".join(keep)[-8000:]


def where_missing(broker, s, missing, events, received, killed_at) -> dict[str, object]:
    """For each missing trigger: its partition/offset, the user's last events and lists."""
    import asyncio

    from aiokafka import AIOKafkaConsumer

    async def offsets(topic: str, field: str) -> dict[str, list[tuple[int, int]]]:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=broker.bootstrap_servers, auto_offset_reset="earliest"
        )
        await consumer.start()
        found: dict[str, list[tuple[int, int]]] = defaultdict(list)
        try:
            for _ in range(20):
                for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                    for r in records:
                        found[orjson.loads(r.value)[field]].append((tp.partition, r.offset))
        finally:
            await consumer.stop()
        return found

    at = {k: v[0] for k, v in asyncio.run(offsets(s.events_topic, "event_id")).items()}
    # the lists as a second, fresh reader finds them: were they written, or not read?
    lists_at = asyncio.run(offsets(s.recommendations_topic, "user_id"))
    per_partition: dict[int, list[int]] = defaultdict(list)
    for places in lists_at.values():
        for partition, offset in places:
            per_partition[partition].append(offset)
    report: dict[str, object] = {
        "killed_at": killed_at,
        "lists_by_partition": {p: (len(o), max(o)) for p, o in sorted(per_partition.items())},
    }
    for trigger in missing:
        user = next(e.user_id for e in events if e.event_id == trigger)
        mine = [e.event_id for e in events if e.user_id == user]
        report[trigger] = {
            "at": at.get(trigger),
            "user_events_tail": [(e, at.get(e)) for e in mine[-4:]],
            "lists": [
                (r.trigger_event_id, at.get(r.trigger_event_id), r.generated_ts - killed_at)
                for r in received
                if r.user_id == user
            ][-6:],
            "lists_found_again": lists_at.get(user, [])[-4:],
        }
    return report


def group_offsets(broker: EmbeddedBroker, group: str, topic: str) -> dict[str, dict[int, int]]:
    """The group's committed offsets and the topic's end offsets, by partition."""
    import asyncio

    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def run() -> dict[str, dict[int, int]]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=broker.bootstrap_servers, group_id=group, enable_auto_commit=False
        )
        await consumer.start()
        try:
            partitions = [
                TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()
            ]
            ends = await consumer.end_offsets(partitions)
            return {
                "committed": {tp.partition: await consumer.committed(tp) for tp in partitions},
                "end": {tp.partition: ends[tp] for tp in partitions},
            }
        finally:
            await consumer.stop()

    return asyncio.run(run())


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_ten_thousand_hostile_messages_between_good_traffic(
    broker: EmbeddedBroker, worker_factory, datasets_dir: Path
) -> None:
    from collections import Counter

    from tests.hostile import HUGE_BYTES, HUGE_EVERY, hostile_messages

    live = worker_factory().start()
    s = live.settings
    wait_until_ready(live)
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
    good = [(e.user_id.encode(), e.to_json()) for e in events]
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


SLOW_SCORER = '''"""Test-only fault: every scoring call takes 100 ms longer than the model needs."""
import time

import stream.scorer

_score = stream.scorer.Scorer.score


def _slow(self, contexts):
    time.sleep(0.1)
    return _score(self, contexts)


stream.scorer.Scorer.score = _slow
'''


@pytest.mark.slow
def test_a_slow_model_backs_up_into_kafka_not_into_memory(
    broker: EmbeddedBroker, worker_factory, datasets_dir: Path, tmp_path: Path
) -> None:
    """Inference far slower than arrivals: the backlog waits in the topic, memory stays flat."""
    fault = tmp_path / "slow-model"
    fault.mkdir()
    (fault / "sitecustomize.py").write_text(SLOW_SCORER)
    pythonpath = os.pathsep.join(p for p in (str(fault), os.environ.get("PYTHONPATH")) if p)
    live = worker_factory(
        PYTHONPATH=pythonpath, STREAMREC_BATCH_MAX_USERS="16", STREAMREC_BATCH_MAX_EVENTS="64"
    ).start()
    s = live.settings
    wait_until_ready(live)
    assert live.process is not None
    rss_before = rss_mb(live.process.pid)
    events = sample_events(datasets_dir, users=400, per_user=50)
    assert len(events) >= 15_000
    produce(
        broker.bootstrap_servers,
        s.events_topic,
        [(e.user_id.encode(), e.to_json()) for e in events],
    )
    last = {e.user_id: e.event_id for e in events}
    samples: list[tuple[float, int, int, float]] = []  # (t, lag, pending users, RSS MB)
    started = time.monotonic()
    while time.monotonic() - started < 240:
        body = get_json(f"{live.web}/stats/")[1]
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
        time.sleep(1.0)
    got = consume_until(
        broker.bootstrap_servers,
        [s.recommendations_topic],
        lambda got: set(last.values()) <= set(lists_by_trigger(got[s.recommendations_topic])),
        timeout=60,
    )
    assert live.process.poll() is None, live.log_text()[-3000:]
    body = get_json(f"{live.web}/stats/")[1]
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
    # backpressure: the worker left most of the backlog in Kafka instead of reading it in
    assert peak_lag >= len(events) // 2, samples[:5]
    assert max(pending for _, _, pending, _ in samples) <= 16
    assert summaries["batch_users"]["max"] <= 16
    # graceful: a user's events that wait together are folded into one list
    assert counters.get("events_coalesced", 0) > 0 and counters["lists_out"] < len(events)
    assert growth < 100, samples


class Endpoint:
    """Where clients are told to connect: the proxy in front of a broker."""

    def __init__(self, port: int) -> None:
        self.bootstrap_servers = f"127.0.0.1:{port}"
        self.url = f"kafka://{self.bootstrap_servers}"


def assert_contexts_match_a_fold(worker: Worker, events: list[Event], users) -> None:
    """The worker's context of each of ``users`` equals the fold of all their events."""
    from stream.context import ContextLimits, update_context

    folded: dict[str, bytes] = {}
    for ev in events:
        update_context(folded, ev, ContextLimits.from_settings(worker.settings))
    for user in users:
        status, body = get_json(f"{worker.web}/context/{user}/")
        assert status == 200, (user, status, body, worker.log_text()[-3000:])
        expected = UserContext.from_bytes(folded[user])
        assert expected is not None
        assert body["events"] == [list(e) for e in expected.events]
        assert tuple(body["purchased"]) == expected.purchased


@pytest.mark.slow
def test_a_broker_outage_loses_nothing_and_the_worker_catches_up(
    tiny_model_dir: Path, datasets_dir: Path, tmp_path: Path
) -> None:
    """The worker's link to the broker is cut for 15 s while events keep arriving."""
    from stream.broker import free_port
    from tests.kafka_proxy import KafkaProxy

    proxy_port = free_port()
    log = (tmp_path / "broker.log").open("wb")
    with (
        EmbeddedBroker(log_file=log, advertised_port=proxy_port) as real,
        KafkaProxy(real.port, proxy_port) as proxy,
    ):
        front = Endpoint(proxy_port)
        live = Worker(front, tiny_model_dir, tmp_path).start()
        try:
            s = live.settings
            wait_until_ready(live)
            events = sample_events(datasets_dir, users=60, per_user=30)
            third = len(events) // 3
            before, during, after = events[:third], events[third : 2 * third], events[2 * third :]

            def send(batch: list[Event]) -> None:
                produce(
                    front.bootstrap_servers,
                    s.events_topic,
                    [(e.user_id.encode(), e.to_json()) for e in batch],
                )

            send(before)
            last_before = {e.user_id: e.event_id for e in before}
            consume_until(
                front.bootstrap_servers,
                [s.recommendations_topic],
                lambda got: (
                    set(last_before.values()) <= set(lists_by_trigger(got[s.recommendations_topic]))
                ),
            )
            in_before = get_json(f"{live.web}/stats/")[1]["counters"]["events_in"]
            proxy.cut("faust")  # the worker's clients only: producers and readers still reach it
            cut_at = time.monotonic()
            send(during)  # events keep arriving while the worker cannot see the broker
            time.sleep(max(0.0, 15.0 - (time.monotonic() - cut_at)))
            assert live.process is not None and live.process.poll() is None, live.log_text()[-3000:]
            stalled = get_json(f"{live.web}/stats/")[1]
            assert stalled["counters"]["events_in"] == in_before  # nothing read through the cut
            proxy.restore()
            restored_at = time.monotonic()
            send(after)
            last = {e.user_id: e.event_id for e in events}
            lags = []

            def caught_up(got) -> bool:
                lags.append(get_json(f"{live.web}/stats/")[1]["consumer_lag"])
                return set(last.values()) <= set(lists_by_trigger(got[s.recommendations_topic]))

            got = consume_until(
                front.bootstrap_servers, [s.recommendations_topic], caught_up, timeout=180
            )
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


@pytest.mark.slow
def test_scale_out_to_three_workers_and_back_to_two(
    broker: EmbeddedBroker, worker_factory, datasets_dir: Path, tmp_path: Path
) -> None:
    """Two workers share the group; a third joins, then one leaves: every user keeps lists."""
    from stream.broker import free_port

    # 6 partitions: Faust's sticky assignor gives a newcomer partitions only once the others
    # hold more than their share (with 4 over 3 workers, 2 + 2 + 0 counts as balanced).
    first = worker_factory(STREAMREC_TOPIC_PARTITIONS="6")
    shared = {
        k: v for k, v in first.env.items() if k not in ("STREAMREC_WEB_PORT", "STREAMREC_DATA_DIR")
    }

    def another(name: str) -> Worker:
        return worker_factory(
            **shared,
            STREAMREC_WEB_PORT=str(free_port()),
            STREAMREC_DATA_DIR=str(tmp_path / f"data-{name}"),
        )

    s = first.settings
    a, b, c = first.start(), another("b").start(), another("c")
    for w in (a, b):
        wait_until_ready(w, timeout=90)
    events = sample_events(datasets_dir, users=60, per_user=30)
    third = len(events) // 3
    phases = [events[:third], events[third : 2 * third], events[2 * third :]]

    def run_phase(batch: list[Event], live: list[Worker], change=None) -> float:
        """Stream ``batch`` in 10 chunks over ~8 s, calling ``change()`` after the first;
        wait until each user's newest event of it has a list."""
        started = time.monotonic()
        size = -(-len(batch) // 10)
        for i in range(10):
            chunk = batch[i * size : (i + 1) * size]  # in order: a user's events stay in order
            produce(
                broker.bootstrap_servers,
                s.events_topic,
                [(e.user_id.encode(), e.to_json()) for e in chunk],
            )
            if i == 0 and change is not None:
                change()
            time.sleep(0.8)
        wanted = {e.user_id: e.event_id for e in batch}
        got = consume_until(
            broker.bootstrap_servers,
            [s.recommendations_topic],
            lambda got: set(wanted.values()) <= set(lists_by_trigger(got[s.recommendations_topic])),
            timeout=180,
        )
        missing = set(wanted.values()) - set(lists_by_trigger(got[s.recommendations_topic]))
        received = [Recommendation.from_json(v) for _, v in got[s.recommendations_topic]]
        if missing:
            report = where_missing(broker, s, missing, events, received, 0)
            print("MISSING", json.dumps(report, default=str))
        assert not missing, len(missing)
        return time.monotonic() - started

    def partitions(live: list[Worker]) -> list[int]:
        return [get_json(f"{w.web}/stats/")[1]["assigned_partitions"] for w in live]

    def leave() -> None:
        assert b.stop() == 0, b.log_text()[-3000:]  # a clean leave; its partitions move on

    timings = [run_phase(phases[0], [a, b])]
    assert sum(partitions([a, b])) >= s.topic_partitions  # actives (and standbys) spread over both
    timings.append(run_phase(phases[1], [a, b, c], change=c.start))  # a third joins mid-stream
    wait_until_ready(c, timeout=90)
    assert all(n > 0 for n in partitions([a, b, c]))  # the newcomer took partitions over
    timings.append(run_phase(phases[2], [a, c], change=leave))  # one leaves mid-stream
    for w in (a, c):
        assert w.process is not None and w.process.poll() is None, w.log_text()[-3000:]
    users = sorted({e.user_id for e in events})
    assert_contexts_match_a_fold(a, events, users[::5])  # routed to whichever worker owns each
    print(
        f"phases served in {', '.join(f'{t:.1f}' for t in timings)} s; "
        f"partitions {partitions([a, c])}"
    )
