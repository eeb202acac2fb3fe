"""Workers of one group scaling out and back in under traffic: every user keeps lists."""

from __future__ import annotations

import json
import time
from pathlib import Path

from stream.contracts.records import Event, Recommendation
from stream.tools.cluster.broker import EmbeddedBroker, free_port
from stream.tools.cluster.worker_process import WorkerProcess
from tests.conftest import WorkerFactory
from tests.integration.kafka_io import consume_until, produce_events
from tests.integration.workers import (
    assert_contexts_match_a_fold,
    lists_by_trigger,
    sample_events,
    where_missing,
)


def test_scale_out_to_three_workers_and_back_to_two(
    broker: EmbeddedBroker, worker_factory: WorkerFactory, datasets_dir: Path, tmp_path: Path
) -> None:
    """Two workers share the group; a third joins, then one leaves: every user keeps lists."""
    # 6 partitions: Faust's sticky assignor gives a newcomer partitions only once the others
    # hold more than their share (with 4 over 3 workers, 2 + 2 + 0 counts as balanced).
    first = worker_factory(topic_partitions=6)
    s = first.settings

    def another(name: str) -> WorkerProcess:
        """A worker of the same group and topics, with its own data directory and port."""
        return worker_factory(
            settings=s.with_overrides(web_port=free_port(), data_dir=str(tmp_path / f"data-{name}"))
        )

    a, b, c = first.start(), another("b").start(), another("c")
    for w in (a, b):
        w.wait_ready(timeout=90)
    events = sample_events(datasets_dir, users=60, per_user=30)
    third = len(events) // 3
    phases = [events[:third], events[third : 2 * third], events[2 * third :]]

    def run_phase(batch: list[Event], live: list[WorkerProcess], change=None) -> float:
        """Stream ``batch`` in 10 chunks over ~8 s, calling ``change()`` after the first;
        wait until each user's newest event of it has a list."""
        started = time.monotonic()
        size = -(-len(batch) // 10)
        for i in range(10):
            chunk = batch[i * size : (i + 1) * size]  # in order: a user's events stay in order
            produce_events(broker.bootstrap_servers, s.events_topic, chunk)
            if i == 0 and change is not None:
                change()
            time.sleep(0.8)
        wanted = {e.user_id: e.event_id for e in batch}
        got = consume_until(
            broker.bootstrap_servers,
            [s.recommendations_topic],
            lambda got: set(wanted.values()) <= set(lists_by_trigger(got[s.recommendations_topic])),
            timeout=180,
        )
        missing = set(wanted.values()) - set(lists_by_trigger(got[s.recommendations_topic]))
        received = [Recommendation.from_json(v) for _, v in got[s.recommendations_topic]]
        if missing:
            report = where_missing(broker, s, missing, events, received, 0)
            print("MISSING", json.dumps(report, default=str))
        assert not missing, len(missing)
        return time.monotonic() - started

    def partitions(live: list[WorkerProcess]) -> list[int]:
        return [w.stats()["assigned_partitions"] for w in live]

    def leave() -> None:
        assert b.stop() == 0, b.log_text()[-3000:]  # a clean leave; its partitions move on

    timings = [run_phase(phases[0], [a, b])]
    assert sum(partitions([a, b])) >= s.topic_partitions  # actives (and standbys) spread over both
    timings.append(run_phase(phases[1], [a, b, c], change=c.start))  # a third joins mid-stream
    c.wait_ready(timeout=90)
    assert all(n > 0 for n in partitions([a, b, c]))  # the newcomer took partitions over
    timings.append(run_phase(phases[2], [a, c], change=leave))  # one leaves mid-stream
    for w in (a, c):
        assert w.process is not None and w.process.poll() is None, w.log_text()[-3000:]
    users = sorted({e.user_id for e in events})
    assert_contexts_match_a_fold(a, events, users[::5])  # routed to whichever worker owns each
    print(
        f"phases served in {', '.join(f'{t:.1f}' for t in timings)} s; "
        f"partitions {partitions([a, c])}"
    )
