"""Latency of ``GET /recommendations/<user_id>/``, answered locally and routed.

``python -m tests.benchmarks.lookup_latency [--model DIR] [--users N] [--rounds R] [--out FILE]``
starts the embedded broker and a group of two worker processes (4 partitions), gives ``N``
users one event each and waits for every list, then asks the first worker for each user's
list ``R`` times over one kept-alive HTTP connection. A user whose partition the first worker
owns is answered from its own table (``local``); the others are forwarded by Faust's topic
routing to the worker that owns them (``routed``). Every answer is checked against the list
on the topic. With ``--load-rate R`` the same users keep producing R events/s meanwhile
(the workers score while they answer; answers are then checked for their user only). Prints
one JSON object: p50, p90, p99 and max per kind, in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from stream.contracts.records import Event
from stream.settings import Settings
from stream.tools.cluster.broker import EmbeddedBroker
from stream.tools.cluster.lists import TopicReader
from stream.tools.cluster.worker_process import WorkerProcess, create_topics, fresh_settings

PARTITIONS = 4


async def serve(settings: Settings, users: int) -> dict[str, bytes]:
    """One event per user; every user's list as on the topic."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=5)
    await producer.start()
    now = time.time_ns() // 1_000_000
    try:
        for n in range(users):
            ev = Event(f"e{n}", f"user-{n}", "click", now, item_id=str(1 + n % 1682))
            key, value = ev.to_message()
            await producer.send(settings.events_topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()
    lists: dict[str, bytes] = {}

    def on_record(record: object) -> None:
        lists[orjson.loads(record.value)["user_id"]] = record.value  # type: ignore[attr-defined]

    async with TopicReader(settings.bootstrap_servers, [settings.recommendations_topic]) as reader:
        await reader.follow(on_record, lambda: len(lists) >= users, timeout_s=120)
    return lists


def partition(user: str) -> int:
    """The user's partition, as the producer's partitioner (murmur2) chose it."""
    partitions = list(range(PARTITIONS))
    return int(DefaultPartitioner()(user.encode(), partitions, partitions))


async def load(settings: Settings, users: int, rate: float, stop: threading.Event) -> int:
    """Produce clicks of the served users at ``rate`` events/s until ``stop``; how many."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=5)
    await producer.start()
    sent, started = 0, time.monotonic()
    try:
        while not stop.is_set():
            due = started + sent / rate
            if due > time.monotonic():
                await asyncio.sleep(due - time.monotonic())
            n = sent % users
            ev = Event(
                f"load{sent}",
                f"user-{n}",
                "click",
                time.time_ns() // 1_000_000,
                str(1 + sent % 1682),
            )
            key, value = ev.to_message()
            await producer.send(settings.events_topic, value, key=key)
            sent += 1
    finally:
        await producer.stop()
    return sent


def measure(
    worker: WorkerProcess, lists: dict[str, bytes], rounds: int, *, exact: bool = True
) -> dict[str, list[float]]:
    """Milliseconds per lookup on the first worker, by kind; each answer checked.

    ``exact``: each answer must equal the user's list on the topic (no traffic meanwhile).
    """
    stats = worker.get_json("/stats/")[1]
    mine = set(stats["partitions"])
    took: dict[str, list[float]] = {"local": [], "routed": []}
    connection = http.client.HTTPConnection(worker.settings.web_host, worker.ports[0], timeout=5)
    for _ in range(rounds):
        for user, expected in lists.items():
            started = time.perf_counter()
            connection.request("GET", f"/recommendations/{user}/")
            response = connection.getresponse()
            body = response.read()
            elapsed = (time.perf_counter() - started) * 1000
            assert response.status == 200, (user, response.status, body)
            if exact:
                assert orjson.loads(body) == orjson.loads(expected), user
            else:
                assert orjson.loads(body)["user_id"] == user
            took["local" if partition(user) in mine else "routed"].append(elapsed)
    connection.close()
    return took


def main() -> None:
    """Run the measurement and print its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=Settings.from_env().model_dir)
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--load-rate", type=float, default=0.0, help="events/s meanwhile")
    parser.add_argument("--out")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work, EmbeddedBroker() as broker:
        base = Settings(broker=broker.url, model_dir=args.model, topic_partitions=PARTITIONS)
        settings = fresh_settings(base, Path(work), processes=2)
        create_topics(settings)
        with WorkerProcess(settings, Path(work), processes=2) as worker:
            worker.wait_ready()
            lists = asyncio.run(serve(settings, args.users))
            stop = threading.Event()
            result: list[int] = []
            loader = threading.Thread(
                target=lambda: result.append(
                    asyncio.run(load(settings, args.users, args.load_rate, stop))
                )
            )
            if args.load_rate > 0:
                loader.start()
                time.sleep(2)  # the workers are busy before the first lookup
            started = time.monotonic()
            took = measure(worker, lists, args.rounds, exact=args.load_rate <= 0)
            elapsed = time.monotonic() - started
            stop.set()
            if args.load_rate > 0:
                loader.join()
            lag = worker.stats()["consumer_lag"]
    figures: dict[str, object] = {
        "users": args.users,
        "rounds": args.rounds,
        "workers": 2,
        "partitions": PARTITIONS,
        "client": "one kept-alive HTTP connection to the first worker, sequential requests",
        "load_events_per_s": args.load_rate,
        "load_events_sent": result[0] if result else 0,
        "measure_s": round(elapsed, 1),
        "consumer_lag_after": lag,
    }
    for kind, values in took.items():
        figures[kind] = {"lookups": len(values), **percentiles(values)}
    report(figures, args.out)


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p90, p99 and max of milliseconds, rounded to 0.01."""
    v = np.array(values)
    return {
        **{f"p{q}": round(float(np.percentile(v, q)), 2) for q in (50, 90, 99)},
        "max": round(float(v.max()), 2),
    }


def report(figures: dict[str, object], out: str | None) -> None:
    """Print the figures as one JSON line (and write it to ``out``)."""
    line = orjson.dumps(figures).decode()
    if out:
        Path(out).write_text(line + "\n")
    print(line)


if __name__ == "__main__":
    main()
