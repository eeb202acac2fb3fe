"""Search through a running worker (embedded broker, the whole catalogue, the real model).

``GET /search/`` and the list after a search event: exact titles first, a just-added item
first for its exact title as soon as the worker holds it, an unavailable item never, and the
endpoint's contract (400 with a reason, 401 without the token, the result's schema).
"""

from __future__ import annotations

import json
import time
import urllib.parse
from pathlib import Path

import jsonschema

from stream.contracts.manifest import load_manifest
from stream.contracts.records import SCHEMAS_DIR, CatalogueRecord, Event
from stream.tools.cluster.worker_process import WorkerProcess
from tests.conftest import WorkerFactory
from tests.integration.kafka_io import produce, produce_events
from tests.integration.workers import assert_no_traceback, items_of, list_for, wait_for

SCHEMAS = SCHEMAS_DIR
SCHEMA = json.loads((SCHEMAS / "search_result.v1.json").read_text())
FAN = [
    Event(f"fan{n}", "fan", "click", 1_000_000 + n, item)
    for n, item in enumerate(("172", "181", "174"))
]
QUASAR = "Quasar Lighthouse Keepers (1998)"


def search(worker: WorkerProcess, user: str, q: str, **params: str) -> tuple[int, dict]:
    query = urllib.parse.urlencode({"user_id": user, "q": q, **params})
    return worker.get_json(f"/search/?{query}")


def now_ms() -> int:
    return int(time.time() * 1000)


def test_search_over_http_and_events_on_the_whole_catalogue(
    worker_factory: WorkerFactory, shipped_model_dir: Path
) -> None:
    worker = worker_factory(model_dir=str(shipped_model_dir), web_token="s3cret", top_k=20)
    s = worker.settings
    max_k = load_manifest(shipped_model_dir).max_k
    worker.start().wait_ready()
    produce_events(s.bootstrap_servers, s.events_topic, FAN)
    wait_for(worker, lambda c: c["read"])

    # an exact title first, for the fan (personalised) and for someone never seen
    for user, personalised in (("fan", True), ("stranger", False)):
        deadline = time.monotonic() + 30
        while True:
            status, body = search(worker, user, "Fargo (1996)", k=str(max_k))
            if body.get("personalised") == personalised or time.monotonic() > deadline:
                break
            time.sleep(0.2)  # the fan's events are still on their way into the table
        assert status == 200, body
        jsonschema.validate(body, SCHEMA)
        assert body["personalised"] is personalised and len(body["items"]) == max_k
        assert body["items"][0]["item_id"] == "100", body["items"][:3]

    # a just-added item: first for its exact title once the worker holds it
    produced = now_ms()
    record = CatalogueRecord("quasar-1", f"{QUASAR} | Sci-Fi, Drama", ts=produced)
    produce(s.bootstrap_servers, s.catalogue_topic, [record.to_message()])
    while True:
        status, body = search(worker, "fan", QUASAR)
        if body["items"][0]["item_id"] == "quasar-1":
            break
        assert now_ms() - produced < 10_000, "the new item never came first"
    first_after_ms = now_ms() - produced
    print(f"new item first on /search/ {first_after_ms} ms after its record was produced")
    listed = list_for(worker, Event("q1", "fan", "search", now_ms(), query=QUASAR))
    assert items_of(listed)[0] == "quasar-1"

    # unavailable: never listed, searched by its exact title or not
    fargo = "Fargo (1996) | Crime, Drama, Thriller"
    off = CatalogueRecord("100", fargo, ts=now_ms(), available=False)
    produce(s.bootstrap_servers, s.catalogue_topic, [off.to_message()])
    wait_for(worker, lambda c: c["blocked_items"] >= 1)
    status, body = search(worker, "fan", "Fargo (1996)", k=str(max_k))
    assert status == 200 and "100" not in [i["item_id"] for i in body["items"]]
    listed = list_for(worker, Event("q2", "fan", "search", now_ms(), query="Fargo (1996)"))
    assert "100" not in items_of(listed)

    # the contract: a reason for each bad request, a token always
    for params, reason in (
        ({"user_id": "fan", "q": " "}, "empty_q"),
        ({"user_id": "fan", "q": "x" * 1025}, "q_too_long"),
        ({"user_id": "fan", "q": "fargo", "k": "0"}, "bad_k"),
        ({"user_id": "fan", "q": "fargo", "k": str(max_k + 1)}, "bad_k"),
        ({"q": "fargo"}, "missing_user_id"),
        ({"user_id": "fan"}, "missing_q"),
    ):
        status, body = worker.get_json(f"/search/?{urllib.parse.urlencode(params)}")
        assert (status, body["error"]) == (400, reason), params
    status, _ = worker.get_json("/search/?user_id=fan&q=fargo", token="")
    assert status == 401
    counters = worker.stats()["counters"]
    assert counters["search_bad_requests"] == 6 and counters["searches"] >= 4
    assert worker.stop() == 0
    assert_no_traceback(worker)
