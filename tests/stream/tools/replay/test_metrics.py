import math

import numpy as np
import pytest

from stream.tools.replay.metrics import (
    ReplayRun,
    by_user,
    compare,
    final_interactions,
    score_events,
    summarise,
)
from tests.helpers import event

CATALOGUE = ("a", "b", "c", "d")


def run_with(lists, sent, arrived):
    run = ReplayRun("m", "v1", "in-process")
    run.sent.update(sent)
    for event_id, items in lists.items():
        run.record(event_id, items, arrived[event_id])
    return run


def test_each_event_is_scored_against_the_list_current_before_it():
    users = by_user([event(1, "a"), event(2, "b"), event(3, "c")])
    run = run_with(
        lists={"e1": ("b", "c"), "e2": ("d", "c"), "e3": ("a",)},
        sent={"e1": 0.0, "e2": 1.0, "e3": 2.0},
        arrived={"e1": 0.5, "e2": 1.5, "e3": 2.5},
    )
    scored = score_events(users, run, CATALOGUE)
    # e1 has no earlier list; e2 (item b) meets e1's list (rank 1); e3 (c) meets e2's (rank 2)
    assert scored.event_ids == ["e2", "e3"]
    assert scored.ranks.tolist() == [1, 2]
    figures = summarise(scored, len(CATALOGUE))["all"]
    assert figures["hr@5"] == 1.0
    assert figures["mrr@5"] == pytest.approx((1 + 1 / 2) / 2)
    assert figures["ndcg@5"] == pytest.approx((1 + 1 / math.log2(3)) / 2)
    assert figures["coverage@5"] == pytest.approx(3 / 4)  # b, c, d
    # e3's list (d, c) holds nothing the user had (a, b); e2's (b, c) neither (only a)
    assert figures["already_had@5"] == 0.0


def test_a_list_that_arrives_after_the_event_is_not_used():
    users = by_user([event(1, "a"), event(2, "b")])
    run = run_with({"e1": ("b",)}, {"e1": 0.0, "e2": 0.1}, {"e1": 0.2})  # open loop: late
    assert score_events(users, run, CATALOGUE).event_ids == []


def test_final_only_keeps_the_last_catalogue_click_of_users_with_three():
    events = [event(i, item) for i, item in enumerate("abcx")] + [event(9, "d", user="w")]
    assert final_interactions(by_user(events), set(CATALOGUE)) == {"e2"}


def test_comparison_of_a_run_with_itself_is_exactly_zero():
    users = by_user([event(1, "a"), event(2, "b"), event(3, "c")])
    run = run_with(
        {"e1": ("b",), "e2": ("a",), "e3": ("c",)},
        {"e1": 0.0, "e2": 1.0, "e3": 2.0},
        {"e1": 0.5, "e2": 1.5, "e3": 2.5},
    )
    scored = score_events(users, run, CATALOGUE)
    result = compare(scored, scored)["hr@10"]
    assert result["diff"] == result["ci95_low"] == result["ci95_high"] == 0.0
    assert result["events"] == 2


def test_duplicate_lists_are_counted_not_kept():
    run = run_with({"e1": ("a",)}, {"e1": 0.0}, {"e1": 0.1})
    run.record("e1", ("b",), 0.3)
    assert run.lists["e1"] == ("a",) and run.duplicate_lists == 1
    assert np.isclose(run.arrived["e1"], 0.1)
