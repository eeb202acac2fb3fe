"""``python -m stream demo``: the whole product on one machine, in about a minute.

Builds the model on first run, starts the embedded broker and a worker, replays real
MovieLens-100k events into ``events`` at a steady rate, reads ``recommendations``, shows a
live progress line (events/s, lists/s, latency) and a few readable lists, then stops every
process it started. Latency is measured from the moment an event is produced to the moment
the list it triggered arrives.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import io
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaProducer

from model_export.data.sources import DataSettings, movielens_events, movielens_items
from stream.contracts.manifest import load_manifest
from stream.contracts.records import Event, Recommendation
from stream.errors import ModelLoadError
from stream.settings import Settings
from stream.tools.cluster.broker import EmbeddedBroker, free_port
from stream.tools.cluster.lists import follow_lists
from stream.tools.cluster.worker_process import WorkerProcess, create_topics


@dataclass
class Tally:
    """What the demo has seen so far."""

    sent: dict[str, float] = field(default_factory=dict)  # event_id -> send time
    produced: int = 0
    lists: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    latest: dict[str, Recommendation] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def percentile(self, q: float) -> float:
        """Latency percentile (ms) over every list received."""
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def ensure_model(settings: Settings) -> None:
    """Build the MovieLens model into the model directory if there is none yet."""
    try:
        load_manifest(settings.model_dir)
        return
    except ModelLoadError:
        if Path(settings.model_dir, "manifest.json").exists():
            raise  # a broken model is the operator's to fix, not ours to overwrite
    print(
        f"building the MovieLens model into {settings.model_dir} (first run only; about "
        "9 minutes on 2 cores, a bar per training stage)"
    )
    subprocess.run(
        [sys.executable, "-m", "model_export", "build", "--out", settings.model_dir], check=True
    )


async def produce(
    bootstrap: str, topic: str, events: Sequence[Event], rate: float, tally: Tally, stop_at: float
) -> None:
    """Replay ``events`` at ``rate`` events/s (keys = user ids) until done or ``stop_at``."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=2)
    await producer.start()
    try:
        start = time.monotonic()
        for i, ev in enumerate(events):
            due = start + i / rate
            now = time.monotonic()
            if now >= stop_at:
                break
            if due > now:
                await asyncio.sleep(due - now)
            tally.sent[ev.event_id] = time.monotonic()
            key, value = ev.to_message()
            await producer.send(topic, value, key=key)
            tally.produced += 1
        await producer.flush()
    finally:
        await producer.stop()


def arrived(tally: Tally, rec: Recommendation) -> None:
    """Record a list and the produce-to-arrival latency of its trigger event."""
    sent = tally.sent.get(rec.trigger_event_id)
    if sent is not None:
        tally.latencies_ms.append((time.monotonic() - sent) * 1000.0)
    tally.lists += 1
    tally.latest[rec.user_id] = rec


async def report(tally: Tally, stop: asyncio.Event) -> None:
    """Rewrite one live progress line every second."""
    last_events = last_lists = 0
    while not stop.is_set():
        await asyncio.sleep(1.0)
        print(
            f"\r{time.monotonic() - tally.started:5.0f}s | events {tally.produced:6d} "
            f"({tally.produced - last_events:5d}/s) | lists {tally.lists:6d} "
            f"({tally.lists - last_lists:5d}/s) | latency p50 {tally.percentile(50):6.1f} ms "
            f"p99 {tally.percentile(99):6.1f} ms",
            end="",
            flush=True,
        )
        last_events, last_lists = tally.produced, tally.lists


def show_samples(tally: Tally, events: Sequence[Event], titles: dict[str, str], n: int = 3) -> None:
    """Print a few users' recent history and their latest list, as titles."""
    history: dict[str, list[str]] = {}
    for ev in events[: tally.produced]:
        if ev.type == "click" and ev.item_id is not None:
            history.setdefault(ev.user_id, []).append(ev.item_id)
    busiest = sorted(tally.latest, key=lambda u: -len(history.get(u, [])))[:n]
    for user in busiest:
        rec = tally.latest[user]
        print(f"\nuser {user} watched (latest last):")
        for item in history.get(user, [])[-3:]:
            print(f"    {titles.get(item, item)}")
        print(f"  recommended by {rec.model_version}:")
        for item, score in rec.items[:5]:
            print(f"    {score:7.3f}  {titles.get(item, item)}")


async def run(
    args: argparse.Namespace, settings: Settings, broker: EmbeddedBroker, events: Sequence[Event]
) -> Tally:
    """Drive traffic through the running worker and collect figures."""
    tally = Tally()
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(
            follow_lists(
                broker.bootstrap_servers,
                settings.recommendations_topic,
                functools.partial(arrived, tally),
                stop,
            )
        ),
        asyncio.create_task(report(tally, stop)),
    ]
    deadline = time.monotonic() + args.duration
    await produce(
        broker.bootstrap_servers, settings.events_topic, events, args.rate, tally, deadline
    )
    # let the worker finish the tail: wait for the last produced event's list
    last = events[tally.produced - 1].event_id if tally.produced else None
    drain_until = time.monotonic() + 15
    while (
        time.monotonic() < drain_until
        and last is not None
        and not any(r.trigger_event_id == last for r in tally.latest.values())
    ):
        await asyncio.sleep(0.2)
    stop.set()
    await asyncio.gather(*tasks)
    print()
    return tally


def main(argv: Sequence[str]) -> int:
    """Run the demo; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m stream demo", description=__doc__)
    parser.add_argument("--events", type=int, default=15_000, help="events to replay (15000)")
    parser.add_argument("--rate", type=float, default=500.0, help="events per second (500)")
    parser.add_argument("--duration", type=float, default=30.0, help="stop producing after (30 s)")
    args = parser.parse_args(argv)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # progress shows up on time when piped
    settings = Settings.from_env()
    ensure_model(settings)
    datasets_dir = DataSettings.from_env().datasets_dir
    titles = {item.item_id: item.title for item in movielens_items(datasets_dir)}
    events = movielens_events(datasets_dir)[: args.events]
    logs = Path(".cache/demo")
    logs.mkdir(parents=True, exist_ok=True)
    with (
        (logs / "broker.log").open("wb") as broker_log,
        EmbeddedBroker(log_file=broker_log) as broker,
    ):
        print(f"embedded broker on {broker.bootstrap_servers}")
        settings = settings.with_overrides(
            broker=broker.url, data_dir=str(logs / "worker-data"), web_port=free_port()
        )
        create_topics(settings)
        try:
            with WorkerProcess(settings, logs) as worker:
                assert worker.process is not None
                print(f"worker pid {worker.process.pid} started (log: {worker.log_path})")
                waited = worker.wait_ready()
                print(
                    f"worker consuming after {waited:.1f} s; replaying MovieLens at "
                    f"{args.rate:.0f} events/s for up to {args.duration:.0f} s"
                )
                tally = asyncio.run(run(args, settings, broker, events))
        except KeyboardInterrupt:
            print("\ninterrupted")
            return 130
    show_samples(tally, events, titles)
    elapsed = time.monotonic() - tally.started
    print(
        f"\n{tally.produced} events in, {tally.lists} lists out in {elapsed:.0f} s; latency "
        f"p50 {tally.percentile(50):.1f} ms, p99 {tally.percentile(99):.1f} ms"
    )
    if tally.lists == 0:
        print(f"no recommendation lists arrived: see {logs / 'worker.log'}", file=sys.stderr)
        return 1
    return 0
