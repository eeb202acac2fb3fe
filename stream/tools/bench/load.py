"""Load for the bench: events preloaded into a topic, worker saturation, latency at a rate.

Saturation is measured on a backlog produced *before* the worker starts, so the producer does
not share the cores being measured: the worker's own counters (and CPU seconds) over a window
after a warm-up. Latency offers events at a fixed rate to an idle worker and times each from
the event's ``ts`` (stamped when produced) to its list's arrival on the output topic.
:func:`floor` runs a count-only Faust agent, or a plain aiokafka loop, over the same backlog;
:func:`memory_per_user` measures what a worker holds per user.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaProducer, ConsumerRecord

from stream.contracts.records import Event, Recommendation
from stream.errors import StreamrecError
from stream.settings import Settings
from stream.state.context import ContextLimits
from stream.tools.cluster.lists import TopicReader
from stream.tools.cluster.worker_process import (
    WorkerProcess,
    create_topics,
    fresh_settings,
    merged,
    process_env,
)
from stream.tools.replay.metrics import by_user

#: Largest record batch the preloading producer builds (many events per request).
PRELOAD_BATCH_BYTES = 1 << 20


def interleaved(events: Sequence[Event]) -> list[Event]:
    """Users' events round-robin (each user's own order kept), as many concurrent users send.

    MovieLens in time order comes in bursts of one user rating many films at once, which the
    worker would fold into one list; live traffic interleaves users.
    """
    queues = [iter(history) for history in by_user(events).values()]
    order: list[Event] = []
    while queues:
        alive = []
        for queue in queues:
            ev = next(queue, None)
            if ev is not None:
                order.append(ev)
                alive.append(queue)
        queues = alive
    return order


def stream_events(events: Sequence[Event]) -> Iterator[Event]:
    """``events`` forever, each pass with fresh ids, stamped with the current time."""
    for rounds in range(sys.maxsize):
        for ev in events:
            yield Event(
                f"{ev.event_id}-r{rounds}",
                ev.user_id,
                ev.type,
                time.time_ns() // 1_000_000,
                item_id=ev.item_id,
                query=ev.query,
            )


def with_backlog(
    settings: Settings,
    work: Path,
    name: str,
    events: Sequence[Event],
    count: int,
    processes: int = 1,
) -> Settings:
    """``settings`` on fresh topics and group whose events topic holds ``count`` events."""
    settings = fresh_settings(settings, work, name, processes)
    create_topics(settings)
    asyncio.run(preload(settings, stream_events(events), count))
    return settings


async def preload(settings: Settings, events: Iterator[Event], count: int) -> float:
    """Produce ``count`` events (keyed by user) as fast as possible; returns the seconds taken."""
    topic = settings.events_topic
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        linger_ms=20,
        max_batch_size=PRELOAD_BATCH_BYTES,
        max_request_size=4 * PRELOAD_BATCH_BYTES,
    )
    await producer.start()
    started = time.monotonic()
    try:
        for _ in range(count):
            key, value = next(events).to_message()
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()
    return time.monotonic() - started


class Backlog:
    """One preloaded events topic that every saturation phase reads with a group of its own.

    Producing the backlog takes seconds per 100k events; the phases read the same events from
    the start, so it is produced once per run (on the first phase's broker).
    """

    def __init__(self, events: Sequence[Event], count: int) -> None:
        self.events = events
        self.count = count
        self.topic: str | None = None

    def phase(self, settings: Settings, work: Path, name: str, processes: int = 1) -> Settings:
        """``settings`` on a fresh group and output topics, reading the backlog."""
        if self.topic is None:
            self.topic = with_backlog(
                settings, work, "backlog", self.events, self.count
            ).events_topic
        settings = fresh_settings(settings, work, name, processes)
        settings = settings.with_overrides(events_topic=self.topic)
        create_topics(settings)
        return settings


def saturation(
    settings: Settings,
    work: Path,
    name: str,
    backlog: Backlog,
    *,
    warmup: float,
    window: float,
    processes: int = 1,
    profile: Path | None = None,
    profile_s: float = 0.0,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A worker (``processes`` of them) on a preloaded backlog: its rate, CPU and batches.

    ``env``: variables of the worker's own (Faust's ``CYTHON_OPTIMIZATIONS``, say).
    """
    settings = backlog.phase(settings, work, name, processes)
    worker = WorkerProcess(
        settings, work, processes=processes, profile=profile, profile_s=profile_s, env=env
    )
    with worker:
        worker.wait_ready()
        time.sleep(warmup)
        each_before, started = worker.each_stats(), time.monotonic()
        time.sleep(window)
        each_after, elapsed = worker.each_stats(), time.monotonic() - started
    before, after = merged(each_before), merged(each_after)
    delta = {k: v - before["counters"].get(k, 0) for k, v in after["counters"].items()}
    events_in = delta.get("events_in", 0)
    cpu = after["process"]["cpu_seconds"] - before["process"]["cpu_seconds"]
    cores = [
        (a["process"]["cpu_seconds"] - b["process"]["cpu_seconds"]) / elapsed
        for a, b in zip(each_after, each_before, strict=True)
    ]
    return {
        "events_per_s": events_in / elapsed,
        "users_scored_per_s": delta.get("lists_out", 0) / elapsed,
        "events_per_list": events_in / delta["lists_out"] if delta.get("lists_out") else None,
        "cpu_us_per_event": cpu / events_in * 1e6 if events_in else None,
        "window_s": round(elapsed, 1),
        "backlog_exhausted": after["counters"].get("events_in", 0) >= backlog.count,
        "mean_batch_users": after["summaries"].get("batch_users", {}).get("mean"),
        "mean_inference_ms": after["summaries"].get("inference_ms", {}).get("mean"),
        "rss_bytes": after["process"]["rss_bytes"],
        "processes": processes,
        "cores_used_per_process": cores,
    }


def latency(
    settings: Settings,
    work: Path,
    name: str,
    events: Sequence[Event],
    *,
    rate: float,
    window: float,
    processes: int = 1,
) -> dict[str, Any]:
    """An idle worker offered ``rate`` events/s for ``window`` s: event → list percentiles."""
    settings = fresh_settings(settings, work, name, processes)
    create_topics(settings)
    with WorkerProcess(settings, work, processes=processes) as worker:
        worker.wait_ready()
        figures = asyncio.run(offer(settings, events, rate, window))
        summaries = worker.stats()["summaries"]
    in_worker = summaries.get("event_to_list_ms", {})
    return {
        **figures,
        # from the event's ts to its list handed to the producer: the first consumer hop,
        # batching and scoring; the rest is publishing and the reader's own consumer hop
        "worker_event_to_list_mean_ms": in_worker.get("mean"),
        "fetch_max_wait_ms": settings.fetch_max_wait_ms,
    }


async def offer(settings: Settings, events: Sequence[Event], rate: float, window: float) -> dict:
    """Offer ``rate`` events/s for ``window`` s; event ``ts`` → list arrival percentiles."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=1)
    latencies: list[float] = []
    first_ts = time.time_ns() // 1_000_000
    stop = asyncio.Event()

    def arrived(record: ConsumerRecord) -> None:
        rec = Recommendation.from_json(record.value)
        if rec.event_ts >= first_ts:  # lists of earlier phases are not counted
            latencies.append(time.time_ns() / 1e6 - rec.event_ts)

    await producer.start()
    async with TopicReader(
        settings.bootstrap_servers,
        [settings.recommendations_topic],
        from_end=True,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
    ) as lists:
        reader = asyncio.create_task(lists.follow(arrived, stop.is_set))
        try:
            source = stream_events(events)
            started = time.monotonic()
            sent = 0
            while (now := time.monotonic() - started) < window:
                due = sent / rate
                if due > now:
                    await asyncio.sleep(due - now)
                key, value = next(source).to_message()
                await producer.send(settings.events_topic, value, key=key)
                sent += 1
            await producer.flush()
            await asyncio.sleep(1.0)  # the tail's lists
        finally:
            stop.set()
            await reader
            await producer.stop()
    values = np.array(latencies)
    pct = {
        f"p{q}_ms": float(np.percentile(values, q)) if len(values) else None for q in (50, 95, 99)
    }
    # Fewer lists than events sent means the worker fell behind (or coalesced a user's
    # events); none at all means it was still busy with an older backlog.
    return {"offered_events_per_s": rate, "events_sent": sent, "lists_measured": len(values), **pct}


def floor(
    settings: Settings,
    work: Path,
    events: Sequence[Event],
    count: int,
    client: str,
    timeout: float = 600.0,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A floor of :mod:`stream.tools.bench.floor` over ``count`` preloaded events.

    ``client``: ``faust`` (a count-only agent) or ``aiokafka`` (a plain loop that parses and
    answers each event); ``env``: variables of the process's own.
    """
    settings = with_backlog(settings, work, f"floor-{client}", events, count)
    log = work / f"{settings.app_id}.log"
    with log.open("wb") as stderr:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "stream.tools.bench.floor",
                "--topic",
                settings.events_topic,
                "--count",
                str(count),
                "--client",
                client,
            ],
            env=process_env(settings, env),
            stdout=subprocess.PIPE,
            stderr=stderr,
            timeout=timeout,
            check=False,
        )
    if result.returncode != 0 or not result.stdout.strip():
        msg = f"the {client} floor run failed (exit code {result.returncode}); see {log}"
        raise StreamrecError(msg)
    figures: dict[str, Any] = orjson.loads(result.stdout.strip().splitlines()[-1])
    return figures


def distinct_users(events: Sequence[Event], count: int) -> Iterator[Event]:
    """``count`` events of ``count`` different users (MovieLens items, synthetic user ids)."""
    now = time.time_ns() // 1_000_000
    for i in range(count):
        ev = events[i % len(events)]
        yield Event(f"mem-{i}", f"mem-user-{i}", ev.type, now, item_id=ev.item_id, query=ev.query)


def memory_per_user(
    settings: Settings, work: Path, events: Sequence[Event], users: int, timeout: float = 3600.0
) -> dict[str, Any]:
    """A worker's memory after one event each from ``users`` users, and its table's bytes."""
    settings = fresh_settings(settings, work, f"memory-{settings.store.removesuffix('://')}")
    create_topics(settings)
    with WorkerProcess(settings, work) as worker:
        worker.wait_ready()
        before = worker.stats()["process"]["rss_bytes"]
        started = time.monotonic()
        asyncio.run(preload(settings, distinct_users(events, users), users))
        while (stats := worker.stats())["counters"].get("events_in", 0) < users:
            if time.monotonic() - started > timeout:
                msg = f"the worker had not read {users} events after {timeout:.0f} s"
                raise StreamrecError(msg)
            time.sleep(2.0)
        time.sleep(3.0)  # the last batches' contexts written
        stats = worker.stats()
    limits = ContextLimits.from_settings(settings)
    sample = [
        len(limits.apply(None, ev)[0].to_bytes()) + len(ev.user_id)
        for ev in distinct_users(events, min(users, 10_000))
    ]
    rss = stats["process"]["rss_bytes"]
    return {
        "store": settings.store,
        "users": users,
        "table_users": stats["table_users"],
        "rss_bytes": rss,
        "rss_growth_bytes_per_user": (rss - before) / users,
        "table_bytes_per_user": sum(sample) / len(sample),
        "seconds": round(time.monotonic() - started, 1),
    }
