"""``GET /recommendations/<user_id>/``: a user's newest list from any worker, kept over restarts,
and private: a bearer token when one is set; ``/search/`` routed like it."""

from __future__ import annotations

import urllib.parse
import urllib.request
from pathlib import Path

import orjson

from stream.tools.cluster.broker import EmbeddedBroker
from tests.conftest import WorkerFactory
from tests.integration.kafka_io import consume_until
from tests.integration.workers import sample_events, serve


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


def test_the_lookup_serves_the_newest_list_from_any_worker_and_after_a_restart(
    broker: EmbeddedBroker, worker_factory: WorkerFactory, datasets_dir: Path
) -> None:
    """Private, too: with STREAMREC_WEB_TOKEN, 401 without it even when routed; the context
    view off by default; probes and metrics open."""
    token = "correct horse battery staple"
    group = worker_factory(processes=2, web_token=token, context_view=False).start()
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
                assert status == 200, (user, port, got)  # get_json sends the worker's token
                assert got == body

    check_every_user()
    for user in list(expected)[:6]:  # /search/ is routed to the owner of the user's context too
        answers = []
        for port in group.ports:
            query = urllib.parse.urlencode({"user_id": user, "q": "Star Wars (1977)", "k": "5"})
            status, got = group.get_json(f"/search/?{query}", port=port)
            assert status == 200 and got["personalised"], (user, port, got)
            answers.append([i["item_id"] for i in got["items"]])
            assert group.get_json(f"/search/?{query}", port=port, token="")[0] == 401
        assert answers[0][0] == answers[1][0], (user, answers)  # the same owner answered
    for port in group.ports:
        for user in expected:
            for wrong in ("", "wrong", token + "x"):
                status, _ = group.get_json(f"/recommendations/{user}/", port=port, token=wrong)
                assert status == 401, (user, port, wrong)
            status, body = group.get_json(f"/context/{user}/", port=port)
            assert status == 404 and "STREAMREC_CONTEXT_VIEW" in body["error"]
        for open_path in ("/live/", "/ready/", "/stats/"):
            assert group.get_json(open_path, port=port, token="")[0] == 200
        request = f"http://{s.web_host}:{port}/metrics"
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            assert response.status == 200
    status, got = group.get_json("/recommendations/nobody-at-all/")
    assert (status, got["found"]) == (404, False)

    assert group.stop() == 0
    group.start().wait_ready()  # the table comes back from its changelog
    check_every_user()
