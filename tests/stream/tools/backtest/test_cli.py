"""The temporal backtest's parts: the cut, the online baselines, the summary's shape."""

from __future__ import annotations

import argparse

import numpy as np

from model_export.data.sources import CatalogueItem
from stream.state.context import apply_event
from stream.tools.backtest.cli import (
    GROUPS,
    PopularRecent,
    Replay,
    Scored,
    cut_time,
    replay_future,
    summarise,
)
from tests.helpers import event

DAY = 86_400_000


def test_the_cut_is_where_the_share_of_clicks_lies_before_it():
    events = [event(i, "a", ts=i * 10) for i in range(10)]
    assert cut_time(events, 0.7) == 70
    assert sum(e.ts < cut_time(events, 0.7) for e in events) == 7


def test_recent_popularity_forgets_clicks_older_than_its_window():
    popular = PopularRecent(days=1)
    for i, item in enumerate(["old", "old", "old"]):
        popular.observe(event(i, item, ts=i))
    popular.observe(event(9, "new", ts=2 * DAY))
    context, _ = apply_event(
        None, event(10, "x", user="v", ts=2 * DAY), max_events=5, max_purchased=5
    )
    assert popular([context], []) == [["new"]]


def test_recent_popularity_never_counts_a_lists_own_target_or_anything_after_it():
    """Clicks on "hot" arrive in one batch window: no list counts its own or a later one."""
    hour = 3_600_000
    past = [event(i, "a", user=f"p{i}", ts=i) for i in range(2)]  # "a": 2 clicks before the cut
    cut = 10 * hour
    seed = [
        event(10 + i, "b", user=f"u{i}", ts=cut + i) for i in range(5)
    ]  # every user has a context
    hot = [event(20 + i, "hot", user=f"u{i}", ts=cut + hour + i) for i in range(3)]  # one window
    late = event(
        30, "hot", user="u4", ts=cut + 3 * hour
    )  # two hours on: counts the three before it
    catalogue = [CatalogueItem(i, f"{i} | film") for i in ("a", "b", "hot")]
    args = argparse.Namespace(popular_days=7.0)
    replay = replay_future([*past, *seed, *hot, late], catalogue, cut, {}, args)
    ranks = dict(
        zip([s.event.event_id for s in replay.scored], replay.ranks["popular_recent"], strict=True)
    )
    # in the window no click on "hot" is counted yet (counting them would rank it first)
    assert [ranks[e.event_id] for e in hot] == [0, 0, 0]
    assert ranks[late.event_id] == 1  # then "hot" (3 clicks) leads "a" (2); "b" was seen


def test_the_summary_has_every_group_method_difference_and_freshness():
    scored = [
        Scored(event(i, "a", user=f"u{i % 3}", ts=i), cold=i % 2 == 0, new_user=i < 4)
        for i in range(8)
    ]
    replay = Replay(
        scored=scored,
        ranks={"model": [1, 0, 2, 1, 0, 3, 1, 1], "random": [0] * 8},
        freshness_ms=[1.0, 2.0],
        published_after_cut=2,
    )
    summary = summarise(replay, cut_ts=5)
    assert set(summary) == {"cut_ts", *GROUPS, "freshness_ms", "model_minus_baseline"}
    assert summary["overall"]["model"]["hr@10"] == 0.75
    assert summary["cold"]["model"]["events"] == 4 and summary["new_users"]["random"]["events"] == 4
    low, high = summary["overall"]["model"]["hr@10_ci95"]
    assert low < 0.75 < high
    diff = summary["model_minus_baseline"]["overall"]["random"]["hr@10"]
    assert diff[0] == 0.75 and diff[1] < 0.75 < diff[2]
    assert np.isclose(summary["freshness_ms"]["p50"], 1.5)


