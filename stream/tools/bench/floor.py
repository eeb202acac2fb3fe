"""The floors under the worker's cost per event (for the bench): Faust's, and Python's.

``python -m stream.tools.bench.floor --topic T --count N [--client faust|aiokafka]`` reads the
messages of topic ``T`` (already produced, from its start) and prints one JSON line once it
has handled ``N``: the events/s between the first tenth and the last, and the process's CPU
seconds per event over the same span.

* ``faust``: a Faust worker whose one agent only counts, one message at a time (Faust's own
  path: ``STREAMREC_TAKE_FETCHES`` off), on the same transport and settings as streamrec's
  worker. Whatever the worker spends above it per event is its own.
* ``aiokafka``: no Faust: a plain aiokafka loop on the same broker that reads each fetch,
  parses every record (orjson) and produces one small record per event to the settings'
  recommendations topic (aiokafka's own batching; nothing awaited per record but the
  hand-off). Python's floor
  for the job of reading, parsing and answering an event.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from faust.types import StreamT

from stream.app import App
from stream.settings import Settings

#: The share of the events handled before the clock starts (start-up, group join, first fetch).
WARMUP_SHARE = 0.1


class Meter:
    """Counts events; times the span from the first tenth to the last one."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.warm = max(1, int(count * WARMUP_SHARE))
        self.seen = 0
        self.started = self.cpu = 0.0

    def add(self, n: int) -> bool:
        """Count ``n`` more events; True once ``count`` are counted (the figures are printed)."""
        before, self.seen = self.seen, self.seen + n
        if before < self.warm <= self.seen:
            self.started, self.cpu = time.monotonic(), time.process_time()
            self.warm = self.seen
        if self.seen < self.count:
            return False
        events = self.seen - self.warm
        figures = {
            "events": events,
            "events_per_s": events / (time.monotonic() - self.started),
            "cpu_us_per_event": (time.process_time() - self.cpu) / events * 1e6,
        }
        # Faust sends sys.stdout to its log: write to the real one (descriptor 1)
        os.write(1, orjson.dumps(figures) + b"\n")
        return True


def faust_floor(settings: Settings, topic_name: str, meter: Meter) -> None:
    """Count with a Faust agent, one message at a time; exits once counted."""
    settings = settings.with_overrides(take_fetches=False)
    app = App(settings, autodiscover=False, origin=None, web_enabled=False)
    topic = app.topic(topic_name, key_serializer="raw", value_serializer="raw")

    @app.agent(topic, name="count-only")
    async def count(stream: StreamT) -> None:
        async for _ in stream:
            if meter.add(1):
                os._exit(0)  # a measurement, not a service: no graceful shutdown to wait for

    sys.argv = [sys.argv[0], "worker", "-l", "warn"]
    app.main()


async def aiokafka_floor(settings: Settings, topic: str, meter: Meter) -> None:
    """Read, parse and answer each event with a plain aiokafka loop, until counted."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.bootstrap_servers,
        group_id=f"{settings.app_id}-aiokafka-floor",
        auto_offset_reset="earliest",
        enable_auto_commit=True,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, linger_ms=settings.producer_linger_ms
    )
    out = settings.recommendations_topic
    await producer.start()
    await consumer.start()
    try:
        done = False
        while not done:
            fetched = await consumer.getmany(timeout_ms=1000)
            for records in fetched.values():
                for record in records:
                    event = orjson.loads(record.value)
                    await producer.send(out, orjson.dumps({"e": event["event_id"]}), key=record.key)
                done = meter.add(len(records)) or done
    finally:
        await consumer.stop()
        await producer.stop()


def main(argv: Sequence[str]) -> int:
    """Handle ``--count`` messages of ``--topic``, print the rate, exit."""
    parser = argparse.ArgumentParser(prog="python -m stream.tools.bench.floor", description=__doc__)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--client", choices=("faust", "aiokafka"), default="faust")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    meter = Meter(args.count)
    if args.client == "faust":
        faust_floor(settings, args.topic, meter)
    else:
        asyncio.run(aiokafka_floor(settings, args.topic, meter))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
