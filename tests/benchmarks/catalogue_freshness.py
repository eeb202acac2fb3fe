"""How long a new item takes to become listable on a live worker, measured from outside.

``python -m tests.benchmarks.catalogue_freshness [--model DIR] [--items N] [--out FILE]``
starts the embedded broker and one worker, then produces ``N`` new catalogue records one at
a time (each a synthetic MovieLens-like title, labelled so) and, for each, polls the worker's
``/stats/`` every 2 ms until its item set holds one more extra item: the time from handing
the record to the producer to the first batch that can list the item. Prints one JSON object
with p50, p99 and max in milliseconds, and the worker's own ``catalogue_freshness_ms``
summary (from each record's ``ts``).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
from aiokafka import AIOKafkaProducer

from stream.contracts.records import CatalogueRecord
from stream.settings import Settings
from stream.tools.cluster.broker import EmbeddedBroker
from stream.tools.cluster.worker_process import WorkerProcess, create_topics, fresh_settings

POLL_S = 0.002


async def measure(worker: WorkerProcess, items: int) -> list[float]:
    """Milliseconds from producing each record to an item set holding it."""
    s = worker.settings
    producer = AIOKafkaProducer(bootstrap_servers=s.bootstrap_servers, linger_ms=0)
    await producer.start()
    took = []
    try:
        for n in range(items):
            before = worker.stats()["catalogue"]["extra_items"]
            record = CatalogueRecord(
                f"synthetic-{n}",
                f"Synthetic Title {n} (1998) | Drama, Comedy",
                ts=time.time_ns() // 1_000_000,
            )
            started = time.perf_counter()
            key, value = record.to_message()
            await producer.send_and_wait(s.catalogue_topic, value, key=key)
            while worker.stats()["catalogue"]["extra_items"] == before:
                await asyncio.sleep(POLL_S)
            took.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.05)
    finally:
        await producer.stop()
    return took


def main() -> None:
    """Run the measurement and print its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=Settings.from_env().model_dir)
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--out")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work, EmbeddedBroker() as broker:
        settings = fresh_settings(
            Settings(broker=broker.url, model_dir=args.model, topic_partitions=4), Path(work)
        )
        create_topics(settings)
        with WorkerProcess(settings, Path(work)) as worker:
            worker.wait_ready()
            took = asyncio.run(measure(worker, args.items))
            summary = worker.stats()["summaries"]["catalogue_freshness_ms"]
    values = np.array(took)
    figures = {
        "items": len(took),
        "items_are": "synthetic titles, one record at a time",
        "model": args.model,
        "produce_to_listable_ms": {
            "p50": round(float(np.percentile(values, 50)), 1),
            "p99": round(float(np.percentile(values, 99)), 1),
            "max": round(float(values.max()), 1),
        },
        "fetch_max_wait_ms": settings.fetch_max_wait_ms,
        "worker_catalogue_freshness_ms": summary,
    }
    line = orjson.dumps(figures)
    if args.out:
        Path(args.out).write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))
    print(line.decode())


if __name__ == "__main__":
    main()
