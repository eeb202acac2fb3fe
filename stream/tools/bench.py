"""``python -m stream bench``: what streaming costs on top of the model, in one run.

Phases, all on this machine and in this run, with the exported model of
``STREAMREC_MODEL_DIR`` and the worker's settings:

1. **Model only.** The ranker through ONNX Runtime on pre-encoded MovieLens contexts, at the
   worker's batch size (``STREAMREC_BATCH_MAX_USERS``) and one user at a time:
   ``model_only_users_per_s`` and ``batching_gain`` (batched ÷ one at a time).
2. **Queries.** The query encoder on distinct MovieLens titles (batches of 64):
   ``query_encodings_per_s``; a Zipf-distributed stream of searches through the worker's
   query cache: ``query_cache_hit_rate``.
3. **Saturation.** The embedded broker (or ``--broker``) and one worker on fresh topics; a
   producer sends MovieLens events flat out, users interleaved as live traffic is. After
   ``--warmup`` seconds, the worker's own counters over ``--window`` seconds give
   ``saturation_events_per_s`` and scored users/s, and ``pipeline_efficiency`` = scored
   users/s ÷ ``model_only_users_per_s``.
4. **Latency.** Events offered at half the saturation rate for ``--latency-window`` seconds;
   latency runs from the event's ``ts`` (stamped when produced) to the list's arrival on the
   output topic: p50/p95/p99.

``--profile`` runs the worker under py-spy through start-up and the saturation phase (the
latency phase is skipped) and adds ``profile``: where the worker's samples fall.

The last line of output is one JSON object with every figure and the environment
(provider, batch size, threads, cores, GPU).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaProducer, ConsumerRecord

from model_export.data import DataSettings, movielens_events, movielens_items
from stream.context import ContextLimits, UserContext, apply_event
from stream.queries import QueryEncoder
from stream.records import Event, Recommendation
from stream.scorer import Scorer
from stream.settings import Settings
from stream.tools.backtest import by_user
from stream.tools.broker import EmbeddedBroker, free_port
from stream.tools.lists import TopicReader
from stream.tools.worker_process import WorkerGroup, WorkerProcess, worker_on_fresh_topics

QUERY_BATCH = 64
#: Seconds a profiled worker is given to start before the saturation phase.
WORKER_START_S = 15.0
#: Code areas a worker's profile is summarised by (first match of a frame's file path).
PROFILE_AREAS = (
    ("onnxruntime", "inference (ONNX Runtime)"),
    ("stream/scorer.py", "input encoding and decoding"),
    ("stream/context.py", "context update"),
    ("stream/records.py", "event parsing and list encoding"),
    ("faust/tables", "Faust table and changelog"),
    ("aiokafka", "Kafka client (aiokafka)"),
    ("faust/", "Faust streams and topics"),
    ("mode/", "mode services"),
    ("asyncio", "asyncio event loop"),
)
#: Innermost frames of threads that wait rather than work (py-spy does not always tell).
WAITING = ("EpollSelector.select (selectors.py", "_worker (concurrent/futures/thread.py:81)")
#: Most events the flat-out producer lets the worker fall behind: enough to keep it busy,
#: few enough to drain before the latency phase.
MAX_LAG = 10_000
SEARCHES = 10_000
ZIPF_EXPONENT = 1.1


def timed_rate(step: Any, units: int, seconds: float) -> float:
    """Units per second of calling ``step()`` (each call handles ``units``) for ``seconds``."""
    step()  # warm-up: first-run allocations and kernel selection
    calls, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds or calls < 3:
        step()
        calls += 1
    return calls * units / elapsed


def movielens_contexts(settings: Settings, count: int) -> list[UserContext]:
    """The newest contexts of ``count`` MovieLens users, built by the worker's update rule."""
    limits = ContextLimits.from_settings(settings)
    contexts = []
    datasets_dir = DataSettings.from_env().datasets_dir
    for events in list(by_user(movielens_events(datasets_dir)).values())[:count]:
        context = None
        for ev in events:
            context, _ = apply_event(
                context,
                ev,
                max_events=limits.max_events,
                max_purchased=limits.max_purchased,
                max_seen=limits.max_seen,
            )
        assert context is not None
        contexts.append(context)
    return contexts


def model_only(scorer: Scorer, contexts: list[UserContext], batch: int, seconds: float) -> dict:
    """Ranker throughput alone (pre-encoded inputs), batched and one user at a time."""
    batched = scorer.encode(contexts[:batch])
    single = scorer.encode(contexts[:1])
    batched_rate = timed_rate(lambda: scorer.run(batched), batch, seconds)
    single_rate = timed_rate(lambda: scorer.run(single), 1, seconds)
    return {
        "model_only_users_per_s": batched_rate,
        "single_user_users_per_s": single_rate,
        "batching_gain": batched_rate / single_rate,
    }


def query_figures(scorer: Scorer, titles: Sequence[str], seconds: float) -> dict:
    """Query encoder throughput and the cache hit rate on a Zipf stream of searches."""
    if scorer.queries is None:
        return {"query_encodings_per_s": None, "query_cache_hit_rate": None}
    encoder = scorer.queries
    batch = list(titles[:QUERY_BATCH])
    rate = timed_rate(lambda: encoder.encode_uncached(batch), len(batch), seconds)
    rng = np.random.default_rng(0)
    ranks = np.minimum(rng.zipf(ZIPF_EXPONENT, SEARCHES), len(titles)) - 1
    cache = QueryEncoder(encoder.session, encoder.tokenizer, cache_size=encoder.cache_size)
    for rank in ranks:
        cache.encode([titles[rank]])
    return {
        "query_encodings_per_s": rate,
        "query_cache_hit_rate": cache.hits / (cache.hits + cache.misses),
        "query_cache_size": encoder.cache_size,
    }


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


async def saturate(
    settings: Settings,
    worker: WorkerGroup,
    events: Sequence[Event],
    warmup: float,
    window: float,
    *,
    drain: bool = True,
) -> dict:
    """Produce flat out; measure the worker's own counters over ``window`` after ``warmup``.

    The producer stays at most :data:`MAX_LAG` events ahead of the worker, so the worker is
    always busy and (with ``drain``) the backlog drains before the next phase.
    """
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=5)
    await producer.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    source = stream_events(events)
    produced = 0

    async def consumed() -> int:
        stats = await loop.run_in_executor(None, worker.stats)
        return int(stats["counters"].get("events_in", 0))

    async def flood() -> None:
        nonlocal produced
        while not stop.is_set():
            if produced - await consumed() > MAX_LAG:
                await asyncio.sleep(0.2)
                continue
            for _ in range(1000):
                key, value = next(source).to_message()
                await producer.send(settings.events_topic, value, key=key)
            produced += 1000

    task = asyncio.create_task(flood())
    try:
        await asyncio.sleep(warmup)
        before = await loop.run_in_executor(None, worker.stats)
        started = time.monotonic()
        await asyncio.sleep(window)
        after = await loop.run_in_executor(None, worker.stats)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        await task
        await producer.stop()
    drain_until = time.monotonic() + 120
    while drain and await consumed() < produced and time.monotonic() < drain_until:
        await asyncio.sleep(0.5)
    counters = {
        k: after["counters"].get(k, 0) - before["counters"].get(k, 0) for k in after["counters"]
    }
    return {
        "saturation_events_per_s": counters.get("events_in", 0) / elapsed,
        "saturation_users_scored_per_s": counters.get("lists_out", 0) / elapsed,
        "saturation_window_s": round(elapsed, 1),
        "mean_batch_users": after["summaries"].get("batch_users", {}).get("mean"),
        "mean_inference_ms": after["summaries"].get("inference_ms", {}).get("mean"),
    }


async def latency_at(
    settings: Settings, events: Sequence[Event], rate: float, window: float
) -> dict:
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


def profile_summary(path: Path, top: int = 15) -> dict:
    """Share of a worker's samples per code area and the busiest functions (self time).

    ``path`` holds py-spy's raw output: one ``frame;frame;...;frame count`` line per stack,
    each frame ``function (file:line)``, innermost last. Stacks waiting in the event loop's
    ``select`` or in an idle executor thread (:data:`WAITING`) are counted apart; the area
    and function shares are of the remaining (busy) samples. A stack counts towards the
    first area (in :data:`PROFILE_AREAS` order) any of its frames belongs to.
    """
    areas: dict[str, int] = {}
    functions: dict[str, int] = {}
    total = waiting = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if frames[-1].startswith(WAITING):
            waiting += count
            continue
        total += count
        area = next((name for key, name in PROFILE_AREAS if any(key in f for f in frames)), "other")
        areas[area] = areas.get(area, 0) + count
        functions[frames[-1]] = functions.get(frames[-1], 0) + count
    share = {k: round(v / total, 4) for k, v in sorted(areas.items(), key=lambda kv: -kv[1])}
    busiest = sorted(functions.items(), key=lambda kv: -kv[1])[:top]
    return {
        "busy_samples": total,
        "waiting_samples": waiting,
        "area_share": share,
        "top_self": [{"frame": f, "share": round(n / total, 4)} for f, n in busiest],
    }


def environment(scorer: Scorer, settings: Settings) -> dict:
    """Where the figures come from."""
    gpu = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        gpu = out.stdout.strip() or None
    return {
        "provider": scorer.providers[0],
        "ranker": scorer.ranker_role,
        "query_encoder": scorer.query_role,
        "model_version": scorer.model_version,
        "topic_partitions": settings.topic_partitions,
        "batch_max_users": settings.batch_max_users,
        "batch_max_wait_ms": settings.batch_max_wait_ms,
        "max_inflight_batches": settings.max_inflight_batches,
        "intra_op_threads": settings.intra_op_threads,
        "cpu_cores": os.cpu_count(),
        "gpu": gpu,
        "machine": platform.machine(),
        "python": platform.python_version(),
    }


def run(args: argparse.Namespace, settings: Settings) -> dict:
    """Every phase; returns the figures."""
    datasets_dir = DataSettings.from_env().datasets_dir
    batch = settings.batch_max_users
    scorer = Scorer.from_settings(settings)
    figures: dict[str, Any] = {
        "environment": {**environment(scorer, settings), "workers": args.workers}
    }
    contexts = movielens_contexts(settings, max(batch, 1))
    figures |= model_only(scorer, contexts, batch, args.model_seconds)
    titles = [item.title for item in movielens_items(datasets_dir)]
    figures |= query_figures(scorer, titles, args.model_seconds)
    events = interleaved(movielens_events(datasets_dir))
    work = Path(args.out) / "work"
    work.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if not args.broker:
            log = stack.enter_context((work / "broker.log").open("wb"))
            broker = stack.enter_context(EmbeddedBroker(log_file=log))
            settings = settings.with_overrides(broker=broker.url)
        else:
            settings = settings.with_overrides(broker=args.broker)
        profile = work / "worker-profile.txt" if args.profile else None
        worker = stack.enter_context(
            worker_on_fresh_topics(
                settings,
                work,
                "bench",
                profile=profile,
                profile_s=WORKER_START_S + args.warmup + args.window,
            )
        )
        live = worker.settings
        more = [  # the same group and topics; each its own data directory and port
            stack.enter_context(
                WorkerProcess(
                    live.with_overrides(data_dir=f"{live.data_dir}-{i}", web_port=free_port()),
                    work,
                )
            )
            for i in range(1, args.workers)
        ]
        for extra in more:
            extra.wait_ready()
        group = WorkerGroup([worker, *more])
        figures |= asyncio.run(
            saturate(live, group, events, args.warmup, args.window, drain=profile is None)
        )
        half = max(1.0, figures["saturation_events_per_s"] / 2)
        figures["latency_at_half_saturation"] = (
            None if profile else asyncio.run(latency_at(live, events, half, args.latency_window))
        )
    if profile is not None:
        figures["profile"] = profile_summary(profile)
    figures["pipeline_efficiency"] = (
        figures["saturation_users_scored_per_s"] / figures["model_only_users_per_s"]
    )
    return figures


def main(argv: Sequence[str]) -> int:
    """Parse the command line, run the benchmark, print the JSON; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m stream bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before measuring (10)")
    parser.add_argument("--window", type=float, default=30.0, help="saturation window, s (30)")
    parser.add_argument("--latency-window", type=float, default=20.0, help="latency phase, s (20)")
    parser.add_argument(
        "--model-seconds", type=float, default=5.0, help="per model-only figure (5)"
    )
    parser.add_argument(
        "--broker", default="", help="kafka://host:port instead of the embedded broker"
    )
    parser.add_argument("--out", default="reports/bench", help="working files and bench.json")
    parser.add_argument(
        "--profile", action="store_true", help="profile the worker with py-spy (no latency phase)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="workers in the group (1); STREAMREC_TOPIC_PARTITIONS caps the useful number",
    )
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    figures = run(args, settings)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    line = orjson.dumps(figures)
    (out / "bench.json").write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))
    print(line.decode())
    return 0
