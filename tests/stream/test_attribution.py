"""Attribution of clicks and purchases to the latest list, live and offline."""

from __future__ import annotations

import pytest

from stream.attribution import NO_ARM, Attribution, attribute_log, attributed
from stream.metrics import Metrics
from stream.records import Event, Recommendation

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


def ev(event_id: str, kind: str, ts: int, item: str | None = None, query: str | None = None):
    return Event(event_id, "u", kind, ts, item_id=item, query=query)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (ev("e", "click", 10 * MINUTE, "b"), "click"),
        (ev("e", "purchase", 29 * MINUTE, "c"), "purchase"),
        (ev("e", "click", 30 * MINUTE, "a"), "click"),  # the window's edge is inside
        (ev("e", "click", 30 * MINUTE + 1, "a"), None),  # outside the window
        (ev("e", "click", 10 * MINUTE, "z"), None),  # not on the list
        (ev("e", "search", 10 * MINUTE, query="b"), None),
        (ev("e", "click", -1, "a"), None),  # before the list's trigger: cannot be its effect
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
    live.observe(first.to_json(), ev("e1", "click", MINUTE, "a"))
    live.observe(first.to_json(), ev("e2", "click", MINUTE, "zz"))
    live.observe(None, ev("e3", "click", MINUTE, "a"))
    plain = rec("t2", 0, arm=None)
    live.published(plain, first=False)
    live.observe(plain.to_json(), ev("e4", "purchase", 2 * MINUTE, "b"))
    assert metrics.counters == {
        "arm_lists.treatment": 1,
        "arm_users.treatment": 1,
        "arm_clicks.treatment": 1,
        f"arm_lists.{NO_ARM}": 1,
        f"arm_purchases.{NO_ARM}": 1,
    }


def test_offline_attribution_credits_the_list_current_before_each_event():
    events = [
        ev("e1", "click", 0, "x"),  # list L1 (a b c) from it
        ev("e2", "click", MINUTE, "b"),  # on L1: counts; list L2 (d e f)
        ev("e3", "click", 2 * MINUTE, "b"),  # not on L2; no list of its own (coalesced)
        ev("e4", "purchase", 3 * MINUTE, "e"),  # L2 is still the latest: counts; no list
        ev("e5", "click", 3 * MINUTE + WINDOW_MS, "d"),  # on L2, but 32 min after its trigger
        ev("e6", "click", 4 * MINUTE + WINDOW_MS, "a"),  # on L5 (a b c): counts
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
