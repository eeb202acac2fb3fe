"""Attribution of clicks and purchases to the latest list, live and offline."""

from __future__ import annotations

import pytest

from stream.contracts.records import Event, Recommendation
from stream.experiments.attribution import NO_ARM, Attribution, attribute_log, attributed
from stream.telemetry.metrics import Metrics

MINUTE = 60_000
WINDOW_MS = 30 * MINUTE


def rec(trigger: str, ts: int, items=("a", "b", "c"), arm: str | None = "treatment"):
    return Recommendation(
        user_id="u",
        items=[(i, 1.0) for i in items],
        model_version="m",
        trigger_event_id=trigger,
        event_ts=ts,
        generated_ts=ts + 5,
        experiment="ab" if arm else None,
        arm=arm,
    )


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (Event("e", "u", "click", 10 * MINUTE, item_id="b"), "click"),
        (Event("e", "u", "purchase", 29 * MINUTE, item_id="c"), "purchase"),
        (
            Event("e", "u", "click", 30 * MINUTE, item_id="a"),
            "click",
        ),  # the window's edge is inside
        (Event("e", "u", "click", 30 * MINUTE + 1, item_id="a"), None),  # outside the window
        (Event("e", "u", "click", 10 * MINUTE, item_id="z"), None),  # not on the list
        (Event("e", "u", "search", 10 * MINUTE, query="b"), None),
        (
            Event("e", "u", "click", -1, item_id="a"),
            None,
        ),  # before the list's trigger: cannot be its effect
    ],
)
def test_the_rule(event, expected):
    assert attributed(rec("t", 0), event, WINDOW_MS) == expected
    assert attributed(None, event, WINDOW_MS) is None


def test_live_tallies_count_per_arm():
    metrics = Metrics()
    live = Attribution(metrics, window_s=1800)
    first = rec("t1", 0)
    live.published(first, first=True)
    live.observe(first.to_json(), Event("e1", "u", "click", MINUTE, item_id="a"))
    live.observe(first.to_json(), Event("e2", "u", "click", MINUTE, item_id="zz"))
    live.observe(None, Event("e3", "u", "click", MINUTE, item_id="a"))
    plain = rec("t2", 0, arm=None)
    live.published(plain, first=False)
    live.observe(plain.to_json(), Event("e4", "u", "purchase", 2 * MINUTE, item_id="b"))
    assert metrics.counters == {
        "arm_lists.treatment": 1,
        "arm_users.treatment": 1,
        "arm_clicks.treatment": 1,
        f"arm_lists.{NO_ARM}": 1,
        f"arm_purchases.{NO_ARM}": 1,
    }


def test_offline_attribution_credits_the_list_current_before_each_event():
    events = [
        Event("e1", "u", "click", 0, item_id="x"),  # list L1 (a b c) from it
        Event("e2", "u", "click", MINUTE, item_id="b"),  # on L1: counts; list L2 (d e f)
        Event(
            "e3", "u", "click", 2 * MINUTE, item_id="b"
        ),  # not on L2; no list of its own (coalesced)
        Event(
            "e4", "u", "purchase", 3 * MINUTE, item_id="e"
        ),  # L2 is still the latest: counts; no list
        Event(
            "e5", "u", "click", 3 * MINUTE + WINDOW_MS, item_id="d"
        ),  # on L2, but 32 min after its trigger
        Event("e6", "u", "click", 4 * MINUTE + WINDOW_MS, item_id="a"),  # on L5 (a b c): counts
    ]
    lists = {
        "e1": rec("e1", 0),
        "e2": rec("e2", MINUTE, items=("d", "e", "f")),
        "e5": rec("e5", 3 * MINUTE + WINDOW_MS),
        "dup": rec("e5", 3 * MINUTE + WINDOW_MS),  # no event of the log: never current
    }
    out = attribute_log({"u": events}, lists, WINDOW_MS)
    [(key, outcome)] = out.items()
    assert key == ("treatment", "u")
    assert (outcome.lists, outcome.clicks, outcome.purchases) == (3, 2, 1)
