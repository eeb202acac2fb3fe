"""The worker end to end on the embedded broker: its contracts, endpoints and start-up checks.

Real Kafka protocol, real ONNX model. The module's worker serves every test up to the
hot-reload one; each sends its own traffic and asserts on it alone, so they pass in any order.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import jsonschema
import orjson
import pytest

from stream.contracts.manifest import load_manifest
from stream.contracts.records import SCHEMAS_DIR, Event, Recommendation
from stream.tools.cluster.broker import EmbeddedBroker
from stream.tools.cluster.worker_process import WorkerProcess
from tests.conftest import WorkerFactory
from tests.integration.kafka_io import consume_until, produce, produce_events
from tests.integration.workers import (
    assert_no_traceback,
    lists_by_trigger,
    run_worker,
    sample_events,
)

SCHEMAS = SCHEMAS_DIR

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


@pytest.fixture(scope="module")
def worker(broker: EmbeddedBroker, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    from stream.tools.cluster.worker_process import create_topics
    from tests.conftest import worker_settings

    work = tmp_path_factory.mktemp("worker")
    settings = worker_settings(broker.url, tiny_model_dir, work)
    create_topics(settings)
    running = WorkerProcess(settings, work).start()
    running.wait_ready()
    yield running
    assert running.stop() == 0, running.log_text()[-3000:]
    assert_no_traceback(running)  # a normal run's log: every test's traffic, then a clean stop


def test_every_user_gets_valid_lists_and_bad_input_goes_to_dlq(
    broker: EmbeddedBroker, worker: WorkerProcess, datasets_dir: Path, tiny_model_dir: Path
) -> None:
    events = sample_events(datasets_dir, users=60, per_user=12)
    assert len(events) >= 500
    messages: list[tuple[bytes | None, bytes]] = [ev.to_message() for ev in events]
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
    status, stats = worker.get_json("/stats/")
    assert status == 200
    assert stats["counters"]["events_invalid"] == len(MALFORMED)
    assert stats["counters"]["lists_out"] >= len(last_event)


def scrape(worker: WorkerProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` parsed by Prometheus' own parser: (sample name, labels) → value."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{worker.web}/metrics", timeout=10) as response:  # noqa: S310
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_endpoint_and_probes_after_traffic(
    broker: EmbeddedBroker, worker: WorkerProcess, datasets_dir: Path
) -> None:
    """Traffic of its own (users no other test sends) shows in the counters' increase."""
    s = worker.settings
    events = [
        replace(e, event_id=f"metrics-{e.event_id}", user_id=f"metrics-{e.user_id}")
        for e in sample_events(datasets_dir, users=60, per_user=3)
    ]
    before = _unlabelled(scrape(worker))
    messages = [e.to_message() for e in events] + [(k, v) for k, v, _ in MALFORMED]
    produce(broker.bootstrap_servers, s.events_topic, messages)
    last = {e.user_id: e.event_id for e in events}
    consume_until(
        broker.bootstrap_servers,
        [s.recommendations_topic],
        lambda got: set(last.values()) <= set(lists_by_trigger(got[s.recommendations_topic])),
    )
    deadline = time.monotonic() + 30  # the dead letters are counted as they are read
    while time.monotonic() < deadline:
        samples = scrape(worker)
        value = _unlabelled(samples)
        grew = {name: value.get(name, 0) - before.get(name, 0) for name in value}
        if grew["streamrec_events_invalid_total"] >= len(MALFORMED):
            break
        time.sleep(0.5)
    assert grew["streamrec_events_in_total"] == len(messages)
    assert grew["streamrec_events_invalid_total"] == len(MALFORMED)
    assert grew["streamrec_lists_out_total"] >= len(last)
    assert grew["streamrec_batch_users_count"] > 0
    # the agent takes whole fetches (stream.kafka.transport.FetchMessage), not one event at a time:
    # if a Faust upgrade bypassed the consumer's override, every fetch would hold one event
    assert grew["streamrec_fetch_events_sum"] == len(messages)
    assert grew["streamrec_fetch_events_count"] < len(messages) / 2
    assert grew["streamrec_inference_seconds_count"] > 0
    assert grew["streamrec_event_to_list_seconds_count"] >= len(last)
    assert value["streamrec_ready"] == 1 and value["streamrec_table_users"] >= len(last)
    assert "streamrec_consumer_lag" in value and "streamrec_pending_deliveries" in value
    reasons = sum(v for (n, _), v in samples.items() if n == "streamrec_dlq_reason_total")
    assert reasons >= len(MALFORMED)
    model = [dict(labels) for (n, labels), _ in samples.items() if n == "streamrec_model_info"]
    assert model and model[0]["provider"] == "CPUExecutionProvider"
    faust = [n for n, _ in samples if n.startswith("faust_")]
    assert any(n.startswith("faust_messages_received") for n in faust), sorted(set(faust))
    assert worker.get_json("/ready/") == (200, {"ready": True})
    assert worker.get_json("/live/") == (200, {"live": True, "dead_tasks": {}})


def _unlabelled(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, float]:
    return {name: v for (name, labels), v in samples.items() if not labels}


def test_librdkafka_client_feeds_events_and_reads_lists(
    broker: EmbeddedBroker, worker: WorkerProcess
) -> None:
    confluent_kafka = pytest.importorskip("confluent_kafka")
    s = worker.settings
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": broker.bootstrap_servers, "partitioner": "murmur2_random"}
    )
    now = int(time.time() * 1000)
    for i in range(5):
        event = Event(f"ck-{i}", f"ck-user-{i}", "click", now, item_id=str(100 + i))
        key, value = event.to_message()
        producer.produce(s.events_topic, key=key, value=value)
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


def test_a_worker_without_the_export_extra_serves(
    broker: EmbeddedBroker, worker_factory: WorkerFactory, without_export_extra: dict[str, str]
) -> None:
    """``pip install streamrec`` (no extras) is enough to serve lists."""
    live = worker_factory(env=without_export_extra).start()
    live.wait_ready()
    s = live.settings
    probe = Event("no-extra", "u-no-extra", "click", int(time.time() * 1000), item_id="50")
    produce_events(broker.bootstrap_servers, s.events_topic, [probe])
    got = consume_until(
        broker.bootstrap_servers,
        [s.recommendations_topic],
        lambda got: "no-extra" in lists_by_trigger(got[s.recommendations_topic]),
    )
    assert len(lists_by_trigger(got[s.recommendations_topic])["no-extra"].items) == s.top_k
    assert live.stop() == 0
    assert_no_traceback(live)


@pytest.mark.parametrize("damage", ["missing", "tampered"])
def test_worker_refuses_a_model_directory_it_cannot_serve(damage, tiny_model_dir, tmp_path):
    model_dir = tmp_path / "model"
    if damage == "tampered":
        shutil.copytree(tiny_model_dir, model_dir)
        with (model_dir / "ranker.onnx").open("ab") as fh:
            fh.write(b"\0")
    result = run_worker(
        {"STREAMREC_MODEL_DIR": str(model_dir), "STREAMREC_BROKER": "kafka://127.0.0.1:9"},
        tmp_path,
    )
    assert result.returncode != 0
    assert "cannot start the worker" in result.stderr
    assert ("make model" if damage == "missing" else "ranker.onnx has sha256") in (result.stderr)


FAUST = str(Path(sys.executable).with_name("faust"))


@pytest.mark.parametrize(
    "command",
    [
        ("stream", "worker"),
        ("stream", "settings"),
        ("stream", "replay", "--limit", "1"),
        ("stream", "bench"),
        ("stream", "demo"),
        ("stream", "broker"),
        ("model_export", "build"),
        ("faust", "worker"),
    ],
)
def test_an_invalid_setting_stops_every_command_with_one_line(command, tmp_path):
    if command[0] == "faust":
        argv = [FAUST, "-A", "stream.app", *command[1:]]
    else:
        argv = [sys.executable, "-m", *command]
    result = subprocess.run(
        argv,
        env={**os.environ, "STREAMREC_TOP_K": "abc", "STREAMREC_TANSU_BIN": "/nonexistent"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    if command[1] == "broker":  # the broker reads only its own setting
        assert "STREAMREC_TANSU_BIN='/nonexistent' is not an executable file" in lines[0]
    else:
        program = "model_export" if command[0] == "model_export" else "streamrec"
        assert lines[0] == f"{program}: STREAMREC_TOP_K='abc' is not a valid int", lines


def test_faust_command_line_runs_the_same_worker(
    broker: EmbeddedBroker, worker_factory: WorkerFactory, tmp_path: Path
) -> None:
    """``faust -A stream.app worker`` serves as ``python -m stream worker`` does."""
    made = worker_factory()
    live = WorkerProcess(
        made.settings, tmp_path, command=[FAUST, "-A", "stream.app", "worker", "-l", "info"]
    ).start()
    try:
        live.wait_ready()
        s = live.settings
        probe = Event("via-faust", "u-faust", "click", int(time.time() * 1000), item_id="50")
        produce_events(broker.bootstrap_servers, s.events_topic, [probe])
        consume_until(
            broker.bootstrap_servers,
            [s.recommendations_topic],
            lambda got: "via-faust" in lists_by_trigger(got[s.recommendations_topic]),
        )
        assert live.stop() == 0
        assert_no_traceback(live)
    finally:
        live.stop()


def test_a_worker_bound_beyond_loopback_needs_a_token(tiny_model_dir, tmp_path):
    env = {
        "STREAMREC_MODEL_DIR": str(tiny_model_dir),
        "STREAMREC_BROKER": "kafka://127.0.0.1:9",
        "STREAMREC_WEB_HOST": "0.0.0.0",  # noqa: S104 (the configuration under test)
    }
    result = run_worker(env, tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs STREAMREC_WEB_TOKEN" in lines[0], result.stderr[-2000:]


def test_a_web_port_in_use_stops_the_worker_naming_the_port(tiny_model_dir, tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_worker(
            {
                "STREAMREC_MODEL_DIR": str(tiny_model_dir),
                "STREAMREC_BROKER": "kafka://127.0.0.1:9",
                "STREAMREC_WEB_PORT": str(port),
            },
            tmp_path,
        )
    assert result.returncode != 0
    assert f"web port 127.0.0.1:{port} is not available" in result.stderr, result.stderr[-3000:]


def test_a_new_model_version_takes_over_without_a_restart(
    broker: EmbeddedBroker,
    worker_factory: WorkerFactory,
    datasets_dir: Path,
    tiny_model_dir: Path,
    tmp_path: Path,
) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    live = worker_factory(model_dir=str(model), model_reload_s=0.5).start()
    s = live.settings
    live.wait_ready()
    events = sample_events(datasets_dir, users=20, per_user=20)
    before, after = events[: len(events) // 2], events[len(events) // 2 :]
    produce_events(broker.bootstrap_servers, s.events_topic, before)
    old = load_manifest(model).model_version

    # a half-written directory (manifest naming a file being copied) is not taken up
    (model / "ranker.onnx").write_bytes(b"partial copy")
    manifest = orjson.loads((model / "manifest.json").read_bytes())
    manifest["model_version"] = "reloaded-v2"
    (model / "manifest.json.tmp").write_bytes(orjson.dumps(manifest))
    (model / "manifest.json.tmp").replace(model / "manifest.json")
    time.sleep(2)
    assert live.stats()["model_version"] == old
    # the copy completes: the worker switches without a restart
    shutil.copyfile(tiny_model_dir / "ranker.onnx", model / "ranker.onnx")
    deadline = time.monotonic() + 30
    while live.stats()["model_version"] != "reloaded-v2":
        assert time.monotonic() < deadline, live.log_text()[-3000:]
        time.sleep(0.2)

    produce_events(broker.bootstrap_servers, s.events_topic, after)
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
