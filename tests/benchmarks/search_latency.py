"""Latency of ``GET /search/?user_id=…&q=…&k=…``, answered locally and routed, idle and busy.

``python -m tests.benchmarks.search_latency [--model DIR] [--users N] [--rounds R]
[--load-rate R] [--out FILE]`` starts the embedded broker and a group of two worker processes
(4 partitions) over ``--model``, gives ``N`` users one event each (the lookup benchmark's
:func:`~tests.benchmarks.lookup_latency.serve`), then asks the first worker ``R`` searches per
user over one kept-alive HTTP connection: each a MovieLens title, so most queries are new to
the query encoder's cache (``new_query``) and a second pass repeats them (``cached_query``).
A user whose partition the first worker owns is answered by it (``local``), the others are
forwarded to their owner (``routed``). With ``--load-rate`` the users keep producing that many
events/s meanwhile (the workers score lists while they answer). Every answer is checked: 200,
the user's id, ``k`` items at most. The workers take every other setting from the environment
(``STREAMREC_*``, e.g. ``STREAMREC_INTRA_OP_THREADS``). Prints one JSON object: p50, p90, p99
and max per kind, in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import orjson

from stream.contracts.manifest import load_manifest
from stream.settings import Settings
from stream.tools.cluster.broker import EmbeddedBroker
from stream.tools.cluster.worker_process import WorkerProcess, create_topics, fresh_settings
from tests.benchmarks.lookup_latency import PARTITIONS, load, partition, percentiles, report, serve

K = 10


def measure(worker: WorkerProcess, users: list[str], titles: list[str], rounds: int) -> dict:
    """Milliseconds per search on the first worker, by kind."""
    mine = set(worker.get_json("/stats/")[1]["partitions"])
    took: dict[str, list[float]] = {}
    connection = http.client.HTTPConnection(worker.settings.web_host, worker.ports[0], timeout=10)
    queries = [titles[n % len(titles)] for n in range(rounds * len(users))]
    for cache in ("new_query", "cached_query"):
        for n, query in enumerate(queries):
            user = users[n % len(users)]
            path = "/search/?" + urllib.parse.urlencode({"user_id": user, "q": query, "k": K})
            started = time.perf_counter()
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
            elapsed = (time.perf_counter() - started) * 1000
            assert response.status == 200, (user, response.status, body)
            answer = orjson.loads(body)
            assert answer["user_id"] == user and len(answer["items"]) <= K
            where = "local" if partition(user) in mine else "routed"
            took.setdefault(f"{where}_{cache}", []).append(elapsed)
    connection.close()
    return took


def main() -> None:
    """Run the measurement and print its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=Settings.from_env().model_dir)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--load-rate", type=float, default=0.0, help="events/s meanwhile")
    parser.add_argument("--out")
    args = parser.parse_args()
    manifest = load_manifest(args.model, verify_hash=False)
    titles = [t.split(" | ")[0] for t in manifest.item_texts]
    with tempfile.TemporaryDirectory() as work, EmbeddedBroker() as broker:
        base = Settings.from_env().with_overrides(
            broker=broker.url, model_dir=args.model, topic_partitions=PARTITIONS
        )
        settings = fresh_settings(base, Path(work), processes=2)
        create_topics(settings)
        with WorkerProcess(settings, Path(work), processes=2) as worker:
            worker.wait_ready()
            users = sorted(asyncio.run(serve(settings, args.users)))
            stop = threading.Event()
            sent: list[int] = []
            loader = threading.Thread(
                target=lambda: sent.append(
                    asyncio.run(load(settings, args.users, args.load_rate, stop))
                )
            )
            if args.load_rate > 0:
                loader.start()
                time.sleep(2)  # the workers are busy before the first search
            started = time.monotonic()
            took = measure(worker, users, titles, args.rounds)
            elapsed = time.monotonic() - started
            stop.set()
            if args.load_rate > 0:
                loader.join()
            stats = worker.stats()
    figures: dict[str, object] = {
        "model": manifest.model_version,
        "users": args.users,
        "rounds": args.rounds,
        "k": K,
        "workers": 2,
        "partitions": PARTITIONS,
        "client": "one kept-alive HTTP connection to the first worker, sequential requests",
        "load_events_per_s": args.load_rate,
        "load_events_sent": sent[0] if sent else 0,
        "measure_s": round(elapsed, 1),
        "consumer_lag_after": stats["consumer_lag"],
        "worker_search_ms": stats["summaries"].get("search_ms"),
    }
    for kind, values in sorted(took.items()):
        figures[kind] = {"searches": len(values), **percentiles(values)}
    report(figures, args.out)


if __name__ == "__main__":
    main()
