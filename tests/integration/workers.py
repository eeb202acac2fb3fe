"""What the worker integration tests share: real MovieLens samples and checks of their output."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from model_export.data.sources import movielens_events
from stream.contracts.records import Event, Recommendation
from stream.settings import Settings
from stream.state.context import ContextLimits, UserContext, update_context
from stream.tools.cluster.broker import EmbeddedBroker
from stream.tools.cluster.lists import TopicReader
from stream.tools.cluster.worker_process import WorkerProcess
from tests.integration.kafka_io import consume_until, produce_events


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


def serve(broker: EmbeddedBroker, s: Settings, events: list[Event]) -> dict[str, str]:
    """Produce ``events``; wait until each user's newest one has a list. Returns user → it."""
    produce_events(broker.bootstrap_servers, s.events_topic, events)
    last = {ev.user_id: ev.event_id for ev in events}
    got = consume_until(
        broker.bootstrap_servers,
        [s.recommendations_topic],
        lambda got: set(last.values()) <= set(lists_by_trigger(got[s.recommendations_topic])),
    )
    missing = set(last.values()) - set(lists_by_trigger(got[s.recommendations_topic]))
    assert not missing, f"{len(missing)} users' newest events got no list"
    return last


def read_topic(bootstrap: str, topic: str) -> list[ConsumerRecord]:
    """Every record of ``topic`` now (read from the start until a quiet second)."""
    seen: list[ConsumerRecord] = []

    async def run() -> None:
        async with TopicReader(bootstrap, [topic]) as reader:
            quiet = time.monotonic() + 2.0

            def on_record(record: ConsumerRecord) -> None:
                nonlocal quiet
                seen.append(record)
                quiet = time.monotonic() + 1.0

            await reader.follow(on_record, lambda: time.monotonic() > quiet, poll_ms=200)

    asyncio.run(run())
    return seen


def changelog_records(broker: EmbeddedBroker, s: Settings) -> int:
    """Records in the context table's changelog topic (read until a quiet second)."""
    return len(read_topic(broker.bootstrap_servers, f"{s.app_id}-user-context-changelog"))


def newest_lists(bootstrap: str, s: Settings) -> dict[str, Recommendation]:
    """Each user's newest list on the recommendations topic (the last on its partition)."""
    records = read_topic(bootstrap, s.recommendations_topic)
    return {rec.user_id: rec for rec in (Recommendation.from_json(r.value) for r in records)}


def commits_ahead_of_lists(bootstrap: str, s: Settings, events: list[Event]) -> list[str]:
    """Events below their partition's committed offset with no list made at or after them.

    Read while the worker cannot deliver, every list on the topic went out before: an event
    committed without one was acknowledged before its list was delivered.
    """
    at = {
        orjson.loads(r.value)["event_id"]: (r.partition, r.offset)
        for r in read_topic(bootstrap, s.events_topic)
    }
    committed = group_offsets(bootstrap, s.app_id, s.events_topic)["committed"]
    place = {e.event_id: i for i, e in enumerate(events)}  # a user's events in order
    listed: dict[str, list[int]] = defaultdict(list)
    for r in read_topic(bootstrap, s.recommendations_topic):
        rec = Recommendation.from_json(r.value)
        if rec.trigger_event_id in place:
            listed[rec.user_id].append(place[rec.trigger_event_id])
    ahead = []
    for event in events:
        partition, offset = at[event.event_id]
        if offset < (committed.get(partition) or 0) and not any(
            i >= place[event.event_id] for i in listed[event.user_id]
        ):
            ahead.append(event.event_id)
    return ahead


def duplicate_lists(bootstrap: str, s: Settings) -> int:
    """Lists on the topic beyond the first for their trigger event (at-least-once copies)."""
    triggers = Counter(
        orjson.loads(r.value)["trigger_event_id"]
        for r in read_topic(bootstrap, s.recommendations_topic)
    )
    return sum(n - 1 for n in triggers.values())


def assert_contexts_match_a_fold(
    worker: WorkerProcess, events: list[Event], users: Iterable[str]
) -> None:
    """The worker's context of each of ``users`` equals the fold of all their events."""
    folded: dict[str, bytes] = {}
    for ev in events:
        update_context(folded, ev, ContextLimits.from_settings(worker.settings))
    for user in users:
        status, body = worker.get_json(f"/context/{user}/")
        assert status == 200, (user, status, body, worker.log_text()[-3000:])
        expected = UserContext.from_bytes(folded[user])
        assert expected is not None
        assert body["events"] == [list(e) for e in expected.events]
        assert tuple(body["purchased"]) == expected.purchased


def assert_no_traceback(worker: WorkerProcess) -> None:
    """A worker's log of a normal run holds no Python traceback."""
    text = worker.log_text()
    assert "Traceback" not in text, text[text.index("Traceback") - 500 :][:4000]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def task_dump(worker: WorkerProcess) -> str:
    """Every asyncio task's stack, which mode's worker logs on SIGUSR1 (for failure messages)."""
    assert worker.process is not None
    size = worker.log_path.stat().st_size
    worker.process.send_signal(signal.SIGUSR1)
    time.sleep(3)
    text = worker.log_text()[size:]
    keep = [block for block in text.split("Task") if "stream/" in block or "faust/" in block]
    return "Task".join(keep)[-8000:]


def group_offsets(
    broker: EmbeddedBroker | str, group: str, topic: str
) -> dict[str, dict[int, int]]:
    """The group's committed offsets and the topic's end offsets, by partition."""
    bootstrap = broker if isinstance(broker, str) else broker.bootstrap_servers

    async def run() -> dict[str, dict[int, int]]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
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


def where_missing(broker, s, missing, events, received, killed_at) -> dict[str, object]:
    """For each missing trigger: its partition/offset, the user's last events and lists."""

    async def offsets(topic: str, field: str) -> dict[str, list[tuple[int, int]]]:
        found: dict[str, list[tuple[int, int]]] = defaultdict(list)
        async with TopicReader(broker.bootstrap_servers, [topic]) as reader:
            await reader.follow(
                lambda r: found[orjson.loads(r.value)[field]].append((r.partition, r.offset)),
                lambda: False,
                timeout_s=10,
                poll_ms=500,
            )
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


def wait_for(worker: WorkerProcess, check, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        stats = worker.stats()
        if check(stats["catalogue"]):
            return stats["catalogue"]
        assert time.monotonic() < deadline, f"catalogue never got there: {stats['catalogue']}"
        time.sleep(0.1)


def list_for(worker: WorkerProcess, event: Event) -> Recommendation:
    s = worker.settings
    produce_events(s.bootstrap_servers, s.events_topic, [event])
    got = consume_until(
        s.bootstrap_servers,
        [s.recommendations_topic],
        lambda r: event.event_id in lists_by_trigger(r[s.recommendations_topic]),
    )
    return lists_by_trigger(got[s.recommendations_topic])[event.event_id]


def items_of(rec: Recommendation) -> list[str]:
    return [item for item, _ in rec.items]


def run_worker(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m stream worker`` (or ``args``) to its exit, with ``env`` on top of ours."""
    return subprocess.run(
        [sys.executable, "-m", "stream", *(args or ("worker",))],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
