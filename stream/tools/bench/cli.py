"""``python -m stream bench``: what streaming costs on top of the model, in one run.

Phases, all on this machine and in this run, with the exported model of
``STREAMREC_MODEL_DIR`` and the worker's settings:

1. **Model only.** The ranker through ONNX Runtime on pre-encoded MovieLens contexts, at the
   worker's batch size (``STREAMREC_BATCH_MAX_USERS``) and one user at a time:
   ``model_only_users_per_s`` and ``batching_gain`` (batched ÷ one at a time).
   ``catalogue_scaling``: the same at larger catalogues (``--catalogue-sizes``; the extra
   items are synthetic, random vectors of the trained items' scale, labelled so), and
   ``item_tower_items_per_s``: synthetic item texts embedded by the item tower.
2. **Queries.** The query encoder on distinct MovieLens titles (batches of 64):
   ``query_encodings_per_s``; a Zipf-distributed stream of searches through the worker's
   query cache: ``query_cache_hit_rate``.
3. **Floors** (:mod:`stream.tools.bench.floor`) over a preloaded backlog of MovieLens events: a
   count-only Faust agent on the worker's transport and settings, one message at a time
   (``faust_floor_events_per_s``), and a plain aiokafka loop that reads, parses and answers
   each event with one small record (``aiokafka_floor_events_per_s``: Python's floor
   without Faust). ``--cython`` also counts with Faust's ``cython_optimizations`` on.
4. **Stream-only saturation.** A worker with a tiny exported model (``--stream-model``, built
   once into the output folder otherwise) on a preloaded backlog (produced once; each
   saturation phase reads it from the start with a group of its own), users interleaved as live
   traffic is: ``stream_only_saturation_events_per_s`` and ``stream_cost_us_per_event`` (the
   worker's CPU seconds per event), the streaming layer's own cost, beside each floor
   (``stream_only_vs_faust_floor``, ``stream_only_vs_aiokafka_floor``). ``--cython`` also
   runs it with ``cython_optimizations`` on (``cython_optimizations``).
5. **Saturation.** The same with the real model: ``saturation_events_per_s`` and
   ``pipeline_efficiency`` = scored users/s ÷ ``model_only_users_per_s``.
6. **Latency.** An idle worker offered half the saturation rate (half the lists/s it made at
   saturation: live traffic from many users folds few events into a list, while the
   backlog's events/s counts many folded into each) for ``--latency-window`` seconds;
   latency runs from the event's ``ts`` (stamped when produced) to the list's arrival
   on the output topic: p50/p95/p99. Twice: with ``STREAMREC_FETCH_MAX_WAIT_MS`` as set
   (``latency_at_half_saturation``), and with it at :data:`LOW_FETCH_WAIT_MS` for the worker
   and the reader (``latency_low_fetch_wait``): the embedded broker holds every fetch for
   the whole wait, so the difference is the broker's share of the latency, not the worker's.
7. **Processes** (``--processes N``, N > 1): phases 4–6 with ``python -m stream worker
   --processes N``; ``process_scaling`` = N-process ÷ one-process stream-only saturation,
   with the cores each process used (``cores_used_per_process``).
8. **Memory** (``--users N``): one event each from N distinct users through a worker with the
   tiny model, on the memory and the RocksDB store: the worker's RSS, its growth per user and
   the table's bytes per user (``memory``).

Backlogs are produced before the worker starts, so the producer does not share the cores
being measured; every worker gets its own topics and group. ``--profile`` runs the
real-model saturation worker under py-spy (the latency phases are skipped) and adds
``profile``: where the worker's samples fall.

The last line of output is one JSON object with every figure and the environment
(provider, batch size, threads, cores, GPU).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from model_export.data.sources import DataSettings, movielens_events, movielens_items
from stream.contracts.manifest import load_manifest
from stream.contracts.records import Event
from stream.errors import ModelLoadError
from stream.model.queries import QueryEncoder
from stream.model.scorer import Scorer
from stream.progress import Stages
from stream.settings import Settings
from stream.state.context import ContextLimits, UserContext
from stream.supervisor import process_count
from stream.tools.bench.load import (
    Backlog,
    floor,
    interleaved,
    latency,
    memory_per_user,
    saturation,
)
from stream.tools.bench.profile import profile_summary
from stream.tools.cluster.broker import EmbeddedBroker
from stream.tools.replay.metrics import by_user

QUERY_BATCH = 64
#: Seconds a profiled worker is given to start before the saturation phase.
WORKER_START_S = 15.0
SEARCHES = 10_000
ZIPF_EXPONENT = 1.1
#: The consumers' fetch wait (ms) of the second latency phase.
LOW_FETCH_WAIT_MS = 5
#: Faust's own switch for its compiled fast paths (a Faust setting read from the environment).
CYTHON_ON = {"CYTHON_OPTIMIZATIONS": "true"}


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
            context, _ = limits.apply(context, ev)
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


def catalogue_scaling(
    scorer: Scorer, contexts: list[UserContext], batch: int, seconds: float, sizes: Sequence[int]
) -> dict:
    """Model-only users/s as the catalogue grows; how fast the item tower embeds new items.

    Items beyond the trained ones are synthetic: random vectors with the trained vectors'
    spread, ids ``synthetic-<n>`` (scoring cost depends on their number, not their content).
    """
    trained = scorer.items
    rng = np.random.default_rng(0)
    spread = float(scorer.id_vectors.std()) or 0.1
    rows = []
    for size in sizes:
        extra = max(0, size - len(scorer.manifest.items))
        names = [f"synthetic-{n}" for n in range(extra)]
        vectors = rng.normal(0, spread, (extra, trained.extra.shape[1]))
        scorer.items = trained.extended(names, vectors)
        inputs = scorer.encode(contexts[:batch])
        rate = timed_rate(lambda inputs=inputs: scorer.run(inputs), batch, seconds)
        rows.append({"items": len(scorer.items.ids) - 1, "model_only_users_per_s": rate})
    scorer.items = trained
    texts = [f"Synthetic item {n} ({1990 + n % 30}) | Drama, Comedy" for n in range(512)]
    tower = timed_rate(lambda: scorer.embed_texts(texts), len(texts), seconds)
    return {
        "catalogue_scaling": rows,
        "catalogue_scaling_items": "MovieLens' trained items, then synthetic random vectors",
        "item_tower_items_per_s": tower,
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


def stream_model(args: argparse.Namespace, work: Path) -> str:
    """The tiny model directory for the stream-only phases: given, or built once."""
    if args.stream_model:
        return str(args.stream_model)
    out = Path(args.out) / "tiny-model"
    try:
        load_manifest(out)
    except ModelLoadError:
        print(f"building a tiny model into {out} (once)", file=sys.stderr)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "model_export",
                "build",
                "--tiny",
                "--epochs",
                "1",
                "--quiet",
                "--checkpoint",
                str(work / "tiny-checkpoint"),
                "--out",
                str(out),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return str(out)


def streaming(
    args: argparse.Namespace,
    settings: Settings,
    tiny: str,
    events: list,
    backlog: Backlog,
    processes: int,
) -> dict[str, Any]:
    """Stream-only and real-model saturation, and latency, for ``processes`` processes."""
    work = Path(args.out) / "work"
    common = {"warmup": args.warmup, "window": args.window}
    only = saturation(
        settings.with_overrides(model_dir=tiny),
        work,
        f"stream-only-p{processes}",
        backlog,
        processes=processes,
        **common,
    )
    profile = work / "worker-profile.txt" if args.profile and processes == 1 else None
    real = saturation(
        settings,
        work,
        f"saturation-p{processes}",
        backlog,
        processes=processes,
        profile=profile,
        profile_s=WORKER_START_S + args.warmup + args.window,
        **common,
    )
    # Live traffic from many users folds few events into one list, so half of saturation is
    # half the lists/s the worker made on the backlog (where it folded many), not its events/s
    half = max(1.0, min(real["events_per_s"], real["users_scored_per_s"]) / 2)
    at_half = {"rate": half, "window": args.latency_window, "processes": processes}
    return {
        "stream_only_saturation_events_per_s": only["events_per_s"],
        "stream_cost_us_per_event": only["cpu_us_per_event"],
        "stream_only": only,
        "saturation_events_per_s": real["events_per_s"],
        "saturation_users_scored_per_s": real["users_scored_per_s"],
        "mean_batch_users": real["mean_batch_users"],
        "mean_inference_ms": real["mean_inference_ms"],
        "saturation": real,
        "latency_at_half_saturation": None
        if args.profile
        else latency(settings, work, f"latency-p{processes}", events, **at_half),
        "latency_low_fetch_wait": None
        if args.profile
        else latency(
            settings.with_overrides(fetch_max_wait_ms=LOW_FETCH_WAIT_MS),
            work,
            f"latency-low-wait-p{processes}",
            events,
            **at_half,
        ),
        **({"profile": profile_summary(profile)} if profile is not None else {}),
    }


def cython(
    args: argparse.Namespace,
    settings: Settings,
    tiny: str,
    events: list,
    backlog: Backlog,
    off: dict[str, Any],
) -> dict[str, Any]:
    """The Faust floor and stream-only saturation again with ``cython_optimizations`` on."""
    work = Path(args.out) / "work"
    on_floor = floor(settings, work, events, args.floor_events, "faust", env=CYTHON_ON)
    on_stream = saturation(
        settings.with_overrides(model_dir=tiny),
        work,
        "stream-only-cython",
        backlog,
        warmup=args.warmup,
        window=args.window,
        env=CYTHON_ON,
    )
    return {
        "faust_floor_events_per_s": {
            "off": off["faust_floor_events_per_s"],
            "on": on_floor["events_per_s"],
        },
        "stream_only_saturation_events_per_s": {
            "off": off["stream_only_saturation_events_per_s"],
            "on": on_stream["events_per_s"],
        },
        "stream_cost_us_per_event": {
            "off": off["stream_cost_us_per_event"],
            "on": on_stream["cpu_us_per_event"],
        },
    }


def ratio(numerator: float, denominator: float) -> float | None:
    """``numerator / denominator``; ``None`` when nothing was measured below the line."""
    return numerator / denominator if denominator else None


def bench_plan(args: argparse.Namespace) -> list[tuple[str, float]]:
    """The phases this run makes, with their seconds on the reference box (2 cores, 2026-12-03)."""
    plan = [("model only and queries", 12.0 * args.model_seconds)]
    if args.model_only:
        return plan
    plan += [("floors", 150.0), ("one process", 420.0)]
    if args.cython:
        plan.append(("cython_optimizations", 300.0))
    if args.processes > 1:
        plan.append((f"{args.processes} processes", 420.0))
    if args.users:
        plan.append(("memory per user", 0.002 * args.users))
    return plan


def _streaming_phases(
    args: argparse.Namespace,
    settings: Settings,
    tiny: str,
    events: list[Event],
    figures: dict[str, Any],
    stages: Stages,
) -> None:
    """The phases on the broker: floors, one process, Cython, N processes, memory."""
    work = Path(args.out) / "work"
    backlog = Backlog(events, args.backlog)
    with stages.stage("floors"):
        for client in ("faust", "aiokafka"):
            measured = floor(settings, work, events, args.floor_events, client)
            figures[f"{client}_floor_events_per_s"] = measured["events_per_s"]
            figures[f"{client}_floor_cpu_us_per_event"] = measured["cpu_us_per_event"]
    with stages.stage("one process"):
        figures |= streaming(args, settings, tiny, events, backlog, 1)
    for client in ("faust", "aiokafka"):
        figures[f"stream_only_vs_{client}_floor"] = ratio(
            figures["stream_only_saturation_events_per_s"],
            figures[f"{client}_floor_events_per_s"],
        )
    if args.cython:
        with stages.stage("cython_optimizations"):
            figures["cython_optimizations"] = cython(args, settings, tiny, events, backlog, figures)
    figures["pipeline_efficiency"] = ratio(
        figures["saturation_users_scored_per_s"], figures["model_only_users_per_s"]
    )
    if args.processes > 1:
        with stages.stage(f"{args.processes} processes"):
            many = streaming(args, settings, tiny, events, backlog, args.processes)
        many["process_scaling"] = ratio(
            many["stream_only_saturation_events_per_s"],
            figures["stream_only_saturation_events_per_s"],
        )
        many["process_scaling_real_model"] = ratio(
            many["saturation_events_per_s"], figures["saturation_events_per_s"]
        )
        figures["processes"] = {"n": args.processes, **many}
        figures["process_scaling"] = many["process_scaling"]
    if args.users:
        with stages.stage("memory per user"):
            stores = ("memory://", "rocksdb://")
            figures["memory"] = [
                memory_per_user(
                    settings.with_overrides(model_dir=tiny, store=store),
                    work,
                    events,
                    args.users,
                )
                for store in stores
            ]


def run(args: argparse.Namespace, settings: Settings) -> dict:
    """Every phase; returns the figures."""
    datasets_dir = DataSettings.from_env().datasets_dir
    batch = settings.batch_max_users
    scorer = Scorer.from_settings(settings)
    figures: dict[str, Any] = {
        "environment": {**environment(scorer, settings), "processes": args.processes}
    }
    stages = Stages("bench", bench_plan(args))
    contexts = movielens_contexts(settings, max(batch, 1))
    with stages.stage("model only and queries"):
        figures |= model_only(scorer, contexts, batch, args.model_seconds)
        sizes = [int(n) for n in args.catalogue_sizes.split(",") if n]
        figures |= catalogue_scaling(scorer, contexts, batch, args.model_seconds, sizes)
        titles = [item.title for item in movielens_items(datasets_dir)]
        figures |= query_figures(scorer, titles, args.model_seconds)
    if args.model_only:
        return figures
    del scorer  # its ONNX Runtime threads would share the cores with the workers
    events = interleaved(movielens_events(datasets_dir))
    work = Path(args.out) / "work"
    work.mkdir(parents=True, exist_ok=True)
    tiny = stream_model(args, work)
    with contextlib.ExitStack() as stack:
        if not args.broker:
            log = stack.enter_context((work / "broker.log").open("wb"))
            broker = stack.enter_context(EmbeddedBroker(log_file=log))
            settings = settings.with_overrides(broker=broker.url)
        else:
            settings = settings.with_overrides(broker=args.broker)
        _streaming_phases(args, settings, tiny, events, figures, stages)
    return figures


def main(argv: Sequence[str]) -> int:
    """Parse the command line, run the benchmark, print the JSON; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m stream bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before measuring (10)")
    parser.add_argument("--window", type=float, default=20.0, help="saturation window, s (20)")
    parser.add_argument("--latency-window", type=float, default=20.0, help="latency phase, s (20)")
    parser.add_argument(
        "--model-seconds", type=float, default=5.0, help="per model-only figure (5)"
    )
    parser.add_argument(
        "--catalogue-sizes",
        default="0,10000,100000",
        help="also measure model-only users/s with this many items (synthetic beyond the "
        "trained ones; 0: the trained items alone; 0,10000,100000)",
    )
    parser.add_argument(
        "--model-only", action="store_true", help="stop after the model-only and query phases"
    )
    parser.add_argument(
        "--backlog",
        type=int,
        default=600_000,
        help="events preloaded once, read from the start by each saturation phase (600000)",
    )
    parser.add_argument(
        "--floor-events", type=int, default=200_000, help="events each floor handles (200000)"
    )
    parser.add_argument(
        "--cython",
        action="store_true",
        help="also run the Faust floor and the stream-only phase with Faust's "
        "cython_optimizations on",
    )
    parser.add_argument(
        "--stream-model", help="tiny model directory for the stream-only phases (default: built)"
    )
    parser.add_argument(
        "--processes",
        type=process_count,
        default=1,
        help="also measure N worker processes (auto: one per core); partitions cap it",
    )
    parser.add_argument(
        "--users",
        type=int,
        default=0,
        help="also measure worker memory after one event each from N users, per store (0: no)",
    )
    parser.add_argument(
        "--broker", default="", help="kafka://host:port instead of the embedded broker"
    )
    parser.add_argument("--out", default="reports/bench", help="working files and bench.json")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="profile the real-model worker with py-spy (no latency phase)",
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
