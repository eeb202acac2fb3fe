import math

import numpy as np
import pytest

from stream.records import Event
from stream.tools.backtest import (
    ReplayRun,
    by_user,
    compare,
    final_interactions,
    score_events,
    summarise,
)

CATALOGUE = ("a", "b", "c", "d")


def ev(i, item, kind="click", user="u", ts=None):
    return Event(f"{user}{i}", user, kind, ts if ts is not None else i, item_id=item)


def run_with(lists, sent, arrived):
    run = ReplayRun("m", "v1", "in-process")
    run.sent.update(sent)
    for event_id, items in lists.items():
        run.record(event_id, items, arrived[event_id])
    return run


def test_each_event_is_scored_against_the_list_current_before_it():
    users = by_user([ev(1, "a"), ev(2, "b"), ev(3, "c")])
    run = run_with(
        lists={"u1": ("b", "c"), "u2": ("d", "c"), "u3": ("a",)},
        sent={"u1": 0.0, "u2": 1.0, "u3": 2.0},
        arrived={"u1": 0.5, "u2": 1.5, "u3": 2.5},
    )
    scored = score_events(users, run, CATALOGUE)
    # u1 has no earlier list; u2 (item b) meets u1's list (rank 1); u3 (c) meets u2's (rank 2)
    assert scored.event_ids == ["u2", "u3"]
    assert scored.ranks.tolist() == [1, 2]
    figures = summarise(scored, len(CATALOGUE))["all"]
    assert figures["hr@5"] == 1.0
    assert figures["mrr@5"] == pytest.approx((1 + 1 / 2) / 2)
    assert figures["ndcg@5"] == pytest.approx((1 + 1 / math.log2(3)) / 2)
    assert figures["coverage@5"] == pytest.approx(3 / 4)  # b, c, d
    # u3's list (d, c) holds nothing the user had (a, b); u2's (b, c) neither (only a)
    assert figures["already_had@5"] == 0.0


def test_a_list_that_arrives_after_the_event_is_not_used():
    users = by_user([ev(1, "a"), ev(2, "b")])
    run = run_with({"u1": ("b",)}, {"u1": 0.0, "u2": 0.1}, {"u1": 0.2})  # open loop: late
    assert score_events(users, run, CATALOGUE).event_ids == []


def test_final_only_keeps_the_last_catalogue_click_of_users_with_three():
    events = [ev(i, item) for i, item in enumerate("abcx")] + [ev(9, "d", user="w")]
    assert final_interactions(by_user(events), set(CATALOGUE)) == {"u2"}


def test_comparison_of_a_run_with_itself_is_exactly_zero():
    users = by_user([ev(1, "a"), ev(2, "b"), ev(3, "c")])
    run = run_with(
        {"u1": ("b",), "u2": ("a",), "u3": ("c",)},
        {"u1": 0.0, "u2": 1.0, "u3": 2.0},
        {"u1": 0.5, "u2": 1.5, "u3": 2.5},
    )
    scored = score_events(users, run, CATALOGUE)
    result = compare(scored, scored)["hr@10"]
    assert result["diff"] == result["ci95_low"] == result["ci95_high"] == 0.0
    assert result["events"] == 2


def test_duplicate_lists_are_counted_not_kept():
    run = run_with({"u1": ("a",)}, {"u1": 0.0}, {"u1": 0.1})
    run.record("u1", ("b",), 0.3)
    assert run.lists["u1"] == ("a",) and run.duplicate_lists == 1
    assert np.isclose(run.arrived["u1"], 0.1)
