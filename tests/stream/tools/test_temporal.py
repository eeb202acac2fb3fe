"""The temporal backtest's parts: the cut, the online baselines, the summary's shape."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest

from model_export.data import CatalogueItem
from stream.context import apply_event
from stream.manifest import load_manifest
from stream.records import Event
from stream.tools.temporal import (
    BASELINES,
    GROUPS,
    PopularRecent,
    Replay,
    Scored,
    cut_time,
    replay_future,
    summarise,
)

DAY = 86_400_000


def click(i: int, user: str, item: str, ts: int) -> Event:
    return Event(f"e{i}", user, "click", ts, item_id=item)


def test_the_cut_is_where_the_share_of_clicks_lies_before_it():
    events = [click(i, "u", "a", i * 10) for i in range(10)]
    assert cut_time(events, 0.7) == 70
    assert sum(e.ts < cut_time(events, 0.7) for e in events) == 7


def test_recent_popularity_forgets_clicks_older_than_its_window():
    popular = PopularRecent(days=1)
    for i, item in enumerate(["old", "old", "old"]):
        popular.observe(click(i, "u", item, i))
    popular.observe(click(9, "u", "new", 2 * DAY))
    context, _ = apply_event(None, click(10, "v", "x", 2 * DAY), max_events=5, max_purchased=5)
    assert popular([context], []) == [["new"]]


def test_recent_popularity_never_counts_a_lists_own_target_or_anything_after_it():
    """Clicks on "hot" arrive in one batch window: no list counts its own or a later one."""
    hour = 3_600_000
    past = [click(i, f"p{i}", "a", i) for i in range(2)]  # "a": 2 clicks before the cut
    cut = 10 * hour
    seed = [click(10 + i, f"u{i}", "b", cut + i) for i in range(5)]  # every user has a context
    hot = [click(20 + i, f"u{i}", "hot", cut + hour + i) for i in range(3)]  # one window
    late = click(30, "u4", "hot", cut + 3 * hour)  # two hours on: counts the three before it
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
        Scored(click(i, f"u{i % 3}", "a", i), cold=i % 2 == 0, new_user=i < 4) for i in range(8)
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


@pytest.mark.slow
@pytest.mark.timeout(900)  # two tiny models trained, 29,734 clicks replayed: 394 s alone here
def test_the_backtest_runs_end_to_end_and_ends_with_its_json_summary(tmp_path, datasets_dir):
    """Tiny models, the whole protocol: cut, train on the past, replay the future, report."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "stream",
            "backtest",
            "--tiny",
            "--datasets-dir",
            str(datasets_dir),
            "--work",
            str(tmp_path / "work"),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["cut_ts"] == 887_039_271_000  # 1998-02-09: 70% of the ratings before it
    methods = {"model", "model_no_text", *BASELINES}
    for group in GROUPS:
        assert set(summary[group]) == methods
        assert all(0.0 <= f["hr@10"] <= 1.0 for f in summary[group].values())
    assert summary["overall"]["model"]["events"] > 29_000
    assert summary["cold"]["model"]["events"] > 500  # clicks on items first seen after the cut
    assert summary["freshness_ms"]["items"] == 109
    assert summary["overall"]["random"]["hr@10"] < summary["overall"]["model"]["hr@10"]
    assert (tmp_path / "out" / "report.md").is_file() and (
        tmp_path / "out" / "hr_at_10.png"
    ).is_file()
    trained = load_manifest(tmp_path / "work" / "model").training
    assert trained["cut_ts"] == summary["cut_ts"] and trained["trained_on"] == "before cut"
