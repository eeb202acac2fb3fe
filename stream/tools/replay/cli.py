"""``python -m stream replay``: backtest a model through the live scoring path.

Two ways to drive the worker's code over a historical event log:

* **in-process** (default): no broker; each event goes, as its wire bytes and key, through
  the worker's per-event step (:class:`stream.processing.step.EventStep`: parsing, the context
  update on a dict in place of the table, the counters) and the
  :class:`~stream.processing.pipeline.ScoringPipeline` (micro-batching, scoring off the event loop,
  the list encoded as on the wire), and its list is decoded back from those bytes.
* **broker** (``--via-kafka``): a real worker subprocess on the embedded broker (or
  ``--broker``), fresh topics for this replay; the log is produced to its events topic and
  lists are read from its recommendations topic (a new topic read from its start, so no
  timestamp-based offset lookups) and matched to their events by ``trigger_event_id``.

Pacing. A user's lists depend only on that user's own events, so users replay concurrently,
each in time order. By default each user's next event is sent once the list reflecting the
previous one has arrived (closed loop: a user sees a list, then acts), so every event gets
its own list and both modes produce identical lists. ``--speed N`` (broker mode) instead
produces the whole log open loop at N x its recorded pace; lists may then coalesce events and
the current list before an event is whatever had arrived by then.

Metrics are computed by :mod:`stream.tools.replay.metrics`; the report is written by
:mod:`stream.tools.replay.report`.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from tqdm import tqdm

from model_export.data import sources as data
from stream.contracts.manifest import load_manifest
from stream.contracts.records import Event, Recommendation
from stream.errors import StreamrecError
from stream.experiments.arms import load_experiment
from stream.kafka.delivery import AckFn, ack_all
from stream.processing.pipeline import ScoringPipeline
from stream.processing.step import EventStep
from stream.settings import Settings
from stream.state.store import MemoryStore, Origin
from stream.state.writer import ContextWriter
from stream.telemetry.metrics import Metrics
from stream.tools.cluster.broker import EmbeddedBroker
from stream.tools.cluster.lists import follow_lists
from stream.tools.cluster.worker_process import worker_on_fresh_topics
from stream.tools.replay.metrics import ReplayRun, by_user

#: Longest a closed-loop replay waits for one event's list before giving up.
LIST_TIMEOUT_S = 60.0


async def replay_in_process(
    users: dict[str, list[Event]], settings: Settings, progress: tqdm | None = None
) -> ReplayRun:
    """Replay through the worker's per-event step, batching and scoring code, without a broker.

    Each event goes to :class:`~stream.processing.step.EventStep` as its wire bytes and key, as the
    agent hands it a message: parsed, remembered in a dict in place of the Faust table, counted, and
    scored by the :class:`~stream.processing.pipeline.ScoringPipeline`; its list is decoded from the
    bytes the worker would publish.
    """
    manifest = load_manifest(settings.model_dir, verify_hash=False)
    run = ReplayRun(settings.model_dir, manifest.model_version, "in-process")
    loop = asyncio.get_running_loop()
    done: dict[str, asyncio.Future[None]] = {}
    dead_letters: list[bytes] = []
    started = time.monotonic()

    async def publish(lists: list[tuple[str, bytes]], acks: Sequence[AckFn]) -> None:
        for _, value in lists:
            rec = Recommendation.from_json(value)
            run.record(rec.trigger_event_id, [i for i, _ in rec.items], _since(started), rec.arm)
        await ack_all(acks)  # in memory: delivered as soon as recorded

    async def dead_letter(value: bytes, ack: AckFn) -> None:
        dead_letters.append(value)
        await ack()

    async def acked(event_id: str) -> None:  # runs after the event's list was published
        if event_id not in run.lists:
            run.failed_events += 1
        done.pop(event_id).set_result(None)

    metrics = Metrics()
    contexts = ContextWriter(MemoryStore(), settings.context_cache_users)
    pipeline = ScoringPipeline(settings, metrics, publish, contexts=contexts)
    step = EventStep(settings, metrics, contexts, pipeline, dead_letter)
    offsets = itertools.count()

    async def play(events: list[Event]) -> None:
        for ev in events:
            future = done[ev.event_id] = loop.create_future()
            run.sent[ev.event_id] = _since(started)
            key, value = ev.to_message()
            origin = Origin(settings.events_topic, 0, next(offsets))
            await step(value, key, origin, functools.partial(acked, ev.event_id))
            await future
            if progress is not None:
                progress.update()

    await pipeline.start()
    try:
        await pipeline.wait_ready()
        started = time.monotonic()
        await asyncio.gather(*(play(events) for events in users.values()))
    finally:
        await pipeline.stop()
    run.wall_s = _since(started)
    run.stats = metrics.snapshot()
    if dead_letters:  # the log was validated when it was read: a rejection here is a bug
        msg = f"{len(dead_letters)} events of the log were dead-lettered: {dead_letters[0]!r}"
        raise StreamrecError(msg)
    return run


async def replay_via_kafka(
    users: dict[str, list[Event]],
    settings: Settings,
    progress: tqdm | None = None,
    *,
    speed: float = 0.0,
) -> ReplayRun:
    """Replay through a running worker: produce events, read lists back (``settings.broker``)."""
    manifest = load_manifest(settings.model_dir, verify_hash=False)
    run = ReplayRun(settings.model_dir, manifest.model_version, "kafka")
    waiting: dict[str, asyncio.Future[None]] = {}
    started = time.monotonic()
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, linger_ms=1)
    stop = asyncio.Event()

    def arrived(rec: Recommendation) -> None:
        run.record(rec.trigger_event_id, [i for i, _ in rec.items], _since(started), rec.arm)
        future = waiting.pop(rec.trigger_event_id, None)
        if future is not None and not future.done():
            future.set_result(None)
            if progress is not None:
                progress.update()

    async def send(ev: Event) -> asyncio.Future[None]:
        future = waiting[ev.event_id] = asyncio.get_running_loop().create_future()
        run.sent[ev.event_id] = _since(started)
        key, value = ev.to_message()
        await producer.send(settings.events_topic, value, key=key)
        return future

    async def play(events: list[Event]) -> None:
        for ev in events:
            try:
                await asyncio.wait_for(await send(ev), LIST_TIMEOUT_S)
            except TimeoutError:
                msg = (
                    f"no list for event {ev.event_id!r} after {LIST_TIMEOUT_S:.0f} s: "
                    "see the worker log"
                )
                raise StreamrecError(msg) from None

    async def open_loop(ordered: list[Event]) -> None:
        first = ordered[0].ts
        for ev in ordered:
            due = (ev.ts - first) / 1000.0 / speed
            if due > _since(started):
                await asyncio.sleep(due - _since(started))
            await send(ev)
        await producer.flush()
        deadline = time.monotonic() + LIST_TIMEOUT_S
        newest = {events[-1].event_id for events in users.values()}
        while time.monotonic() < deadline and not newest <= run.lists.keys():
            await asyncio.sleep(0.1)

    await producer.start()
    reader = asyncio.create_task(
        follow_lists(
            settings.bootstrap_servers,
            settings.recommendations_topic,
            arrived,
            stop,
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
        )
    )
    try:
        started = time.monotonic()
        if speed > 0:
            await open_loop(sorted((e for es in users.values() for e in es), key=lambda e: e.ts))
        else:
            await asyncio.gather(*(play(events) for events in users.values()))
        run.wall_s = _since(started)
    finally:
        stop.set()
        await reader
        await producer.stop()
    return run


def _since(started: float) -> float:
    return time.monotonic() - started


def replay_with_worker(
    users: dict[str, list[Event]],
    settings: Settings,
    work_dir: Path,
    progress: tqdm | None = None,
    *,
    speed: float = 0.0,
) -> ReplayRun:
    """Start a worker for ``settings.model_dir`` on fresh topics of ``settings.broker``, replay."""
    with worker_on_fresh_topics(settings, work_dir, "replay") as worker:
        run = asyncio.run(replay_via_kafka(users, worker.settings, progress, speed=speed))
    run.stats = {"worker_log": str(worker.log_path)}
    return run


def load_log(path: str | None, limit: int) -> tuple[list[Event], dict[str, int]]:
    """The log to replay (a file, or MovieLens), its first ``limit`` events by time if > 0.

    Returns the events and the count of rows skipped by reason (invalid, duplicate ids).
    """
    skipped: dict[str, int] = {}
    if path:
        log = data.read_events(path)
        events, skipped = log.events, dict(log.rejected)
    else:
        events = data.movielens_events(data.DataSettings.from_env().datasets_dir)
    unique: dict[str, Event] = {}
    for ev in events:
        if ev.event_id in unique:
            skipped["duplicate_event_id"] = skipped.get("duplicate_event_id", 0) + 1
        else:
            unique[ev.event_id] = ev
    ordered = sorted(unique.values(), key=lambda e: e.ts)
    return (ordered[:limit] if limit > 0 else ordered), skipped


def replay(
    events: Sequence[Event],
    model_dirs: Sequence[str],
    settings: Settings,
    *,
    via_kafka: bool = False,
    broker: str = "",
    speed: float = 0.0,
    work_dir: Path = Path(".cache/replay"),
    progress: bool = True,
    experiment: str = "",
) -> list[ReplayRun]:
    """Replay ``events`` once per model directory, in the chosen mode.

    With ``experiment`` (an experiment file) instead, one replay in which each user is served
    by the model of the arm assigned to it, as a worker running it would.
    """
    if speed > 0 and not via_kafka:
        msg = "--speed paces a broker replay; add --via-kafka (in-process runs closed loop)"
        raise StreamrecError(msg)
    users = by_user(events)
    runs = []
    settings = settings.with_overrides(experiment=experiment)
    split = load_experiment(experiment) if experiment else None
    for model_dir in [a.model_dir for a in split.arms] if split else model_dirs:
        load_manifest(model_dir)  # fail early, with the manifest's message
    if split is not None:
        model_dirs = [split.arms[0].model_dir]  # one run: the pipeline serves every arm
    for model_dir in model_dirs:
        # a backtest scores with one model from start to end: no reloading
        model_settings = settings.with_overrides(model_dir=model_dir, model_reload_s=0.0)
        name = f"experiment {split.name}" if split else Path(model_dir).name
        bar = tqdm(total=len(events), desc=f"replay {name}", disable=not progress)
        with bar:
            if not via_kafka:
                runs.append(asyncio.run(replay_in_process(users, model_settings, bar)))
            elif broker:
                model_settings = model_settings.with_overrides(broker=broker)
                runs.append(replay_with_worker(users, model_settings, work_dir, bar, speed=speed))
            else:
                work_dir.mkdir(parents=True, exist_ok=True)
                with (
                    (work_dir / "broker.log").open("wb") as log,
                    EmbeddedBroker(log_file=log) as embedded,
                ):
                    model_settings = model_settings.with_overrides(broker=embedded.url)
                    runs.append(
                        replay_with_worker(users, model_settings, work_dir, bar, speed=speed)
                    )
    if split is not None:
        runs[0].model_version = f"experiment {split.name}"
    return runs


def replay_experiment(
    events: Sequence[Event], path: str, settings: Settings, **options: Any
) -> dict[str, Any]:
    """Rehearse the experiment of file ``path`` on ``events``, and return its report.

    Also replays each arm's model alone, the offline comparison the report checks the
    experiment against (:func:`stream.tools.replay.experiment.replay_report`).
    """
    from stream.tools.replay.experiment import replay_report

    experiment = load_experiment(path)
    [run] = replay(events, [], settings, experiment=path, **options)
    offline = replay(events, [a.model_dir for a in experiment.arms], settings, **options)
    return replay_report(events, experiment, run, offline, settings.attribution_window_s)


def main(argv: Sequence[str]) -> int:
    """Parse the command line, replay, write the report; returns the exit code."""
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(
        prog="python -m stream replay", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--events", help="event log, JSONL or Parquet (default: MovieLens-100k)")
    parser.add_argument(
        "--model",
        action="append",
        help="model directory; give two to compare them [env: STREAMREC_MODEL_DIR]",
    )
    parser.add_argument("--via-kafka", action="store_true", help="through a worker and a broker")
    parser.add_argument(
        "--broker", default="", help="kafka://host:port to use instead of the embedded broker"
    )
    parser.add_argument(
        "--speed", type=float, default=0.0, help="open loop at N x recorded pace (--via-kafka)"
    )
    parser.add_argument(
        "--final-only", action="store_true", help="score only each user's last interaction"
    )
    parser.add_argument(
        "--experiment",
        help="experiment file: rehearse it (assignment and attribution as live), and check "
        "it against each arm's model replayed alone",
    )
    parser.add_argument("--limit", type=int, default=0, help="replay the first N events by time")
    parser.add_argument("--out", default="reports/replay", help="report directory")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    models = args.model or [settings.model_dir]
    if len(models) > 2:
        parser.error("give at most two --model directories")
    from stream.tools.replay.report import build_report, write_report

    events, skipped = load_log(args.events, args.limit)
    if args.experiment:
        if args.model or args.speed:
            parser.error("--experiment takes its models from the file, and runs closed loop")
        from stream.tools.replay import experiment

        rep = replay_experiment(
            events,
            args.experiment,
            settings,
            via_kafka=args.via_kafka,
            broker=args.broker,
            work_dir=Path(args.out) / "work",
            progress=not args.quiet,
        )
        print(experiment.write(rep, Path(args.out)), file=sys.stderr)
        print(experiment.headline(rep))
        return 0
    runs = replay(
        events,
        models,
        settings,
        via_kafka=args.via_kafka,
        broker=args.broker,
        speed=args.speed,
        work_dir=Path(args.out) / "work",
        progress=not args.quiet,
    )
    report = build_report(
        events,
        runs,
        final_only=args.final_only,
        skipped=skipped,
        settings=settings,
        speed=args.speed,
    )
    summary = write_report(report, runs, Path(args.out))
    print(summary, file=sys.stderr)
    print(report_line(report))
    return 0


def report_line(report: dict[str, Any]) -> str:
    """The report's headline figures as one JSON line (the command's last line of output)."""
    import orjson

    headline = {
        "models": [
            {
                "model_version": m["model_version"],
                "mode": m["mode"],
                **{k: v for k, v in m["metrics"]["all"].items() if k.startswith(("hr@", "ndcg@"))},
                "wall_s": m["timing"]["wall_s"],
            }
            for m in report["models"]
        ],
    }
    return orjson.dumps(headline).decode()
