"""``GET /recommendations/<user_id>/``: a user's newest list from any worker, kept over restarts."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from stream.tools.broker import EmbeddedBroker
from tests.conftest import WorkerFactory
from tests.kafka_io import consume_until
from tests.workers import sample_events, serve


def newest_lists(broker: EmbeddedBroker, topic: str, triggers: set[str]) -> dict[str, dict]:
    """Each user's newest list on the topic (partition order is a user's order)."""
    got = consume_until(
        broker.bootstrap_servers,
        [topic],
        lambda got: triggers <= {orjson.loads(v)["trigger_event_id"] for _, v in got[topic]},
    )
    newest: dict[str, dict] = {}
    for _, value in got[topic]:
        body = orjson.loads(value)
        newest[body["user_id"]] = body
    return newest


@pytest.mark.slow
def test_the_lookup_serves_the_newest_list_from_any_worker_and_after_a_restart(
    broker: EmbeddedBroker, worker_factory: WorkerFactory, datasets_dir: Path
) -> None:
    group = worker_factory(processes=2).start()
    s = group.settings
    group.wait_ready()
    events = sample_events(datasets_dir, users=40, per_user=12)  # a burst: lists coalesce
    last = serve(broker, s, events)
    expected = newest_lists(broker, s.recommendations_topic, set(last.values()))
    assert {body["trigger_event_id"] for body in expected.values()} == set(last.values())

    def check_every_user() -> None:
        for port in group.ports:  # each worker answers for every user, half of them routed
            for user, body in expected.items():
                status, got = group.get_json(f"/recommendations/{user}/", port=port)
                assert status == 200, (user, port, got)
                assert got == body

    check_every_user()
    status, got = group.get_json("/recommendations/nobody-at-all/")
    assert (status, got["found"]) == (404, False)

    assert group.stop() == 0
    group.start().wait_ready()  # the table comes back from its changelog
    check_every_user()
