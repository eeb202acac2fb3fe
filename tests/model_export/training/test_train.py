import numpy as np
import torch

from model_export.data.sources import movielens_catalogue, movielens_events
from model_export.data.split import build_split
from model_export.model.ranker import RankerConfig, SequenceRanker
from model_export.training.train import (
    TrainConfig,
    _as_searches,
    _excluded,
    _Text,
    searchable_items,
    text_pairs,
    training_queries,
)
from tests.helpers import event

ITEMS = ["a", "b", "c", "d", "e"]


def excluded_sets(split, windows, policy):
    """Per window and position, the item indices training masks there."""
    mask = _excluded(
        torch.from_numpy(windows.item_ids),
        torch.from_numpy(windows.event_types),
        torch.from_numpy(windows.targets),
        policy,
        split.num_items,
    )
    return [[set(np.flatnonzero(p).tolist()) for p in window] for window in mask.numpy()]


def test_training_masks_the_items_a_list_there_excludes_from_its_window():
    split = build_split([event(i, item) for i, item in enumerate("abcde")], ITEMS)
    windows = split.windows(history_length=3, until="test")
    assert windows.item_ids.tolist() == [[2, 3, 4], [0, 0, 1]]
    assert excluded_sets(split, windows, "seen") == [
        [{2}, {2, 3}, {2, 3, 4}],  # a (1), before this window, stays a candidate
        [set(), set(), {1}],
    ]


def test_a_position_target_is_never_masked_and_purchased_masks_purchases_only():
    events = [
        event(1, "a"),
        event(2, "a", "purchase"),
        event(3, "b"),
        event(4, "a"),  # a again: the target of b's position
        event(5, "c"),  # validation
        event(6, "d"),  # test
    ]
    split = build_split(events, ITEMS)
    windows = split.windows(history_length=4)
    assert windows.item_ids.tolist() == [[1, 1, 2, 1]]
    assert windows.targets.tolist() == [[2, 2, 1, 0]]
    assert excluded_sets(split, windows, "seen") == [[{1}, {1}, {2}, {1, 2}]]
    assert excluded_sets(split, windows, "purchased") == [[set(), {1}, set(), {1}]]


def test_an_items_training_queries_are_its_seven_families():
    queries = training_queries("Usual Suspects, The (1995) | Crime, Thriller", seed=7)
    assert queries[:3] == ["Usual Suspects, The (1995)", "The Usual Suspects", "Usual Suspects"]
    assert len(queries) == 7 and queries[-1].startswith("90s ")
    # no year or genre: the exact title stands in for the description
    assert training_queries("Untitled", seed=7)[-1] == "Untitled"


def test_held_out_items_are_never_named_by_a_training_query(datasets_dir):
    catalogue = movielens_catalogue(datasets_dir)
    split = build_split(movielens_events(datasets_dir), [i.item_id for i in catalogue])
    texts = [i.text for i in catalogue]
    searchable = searchable_items(split, 0.1)
    held = {texts[i] for i in np.flatnonzero(~searchable[1:])}
    assert 120 < len(held) < 220 and not searchable[0]
    held -= {texts[i] for i in np.flatnonzero(searchable[1:])}  # MovieLens repeats some movies
    pairs = text_pairs(split, texts, searchable, 4000, seed=7)
    named = [item for query, item in pairs if query not in texts]  # the query pairs
    assert len(named) >= 0.7 * len(pairs) and not held & set(named)


def test_only_searchable_targets_are_searched_for():
    """The events shown as searches name the item clicked next, never a held-out one."""
    ranker = SequenceRanker(RankerConfig(num_items=4, dim=8, history_length=6, text_dim=12))
    generator = torch.Generator().manual_seed(0)
    searches = torch.randn(7, 5, 12, generator=generator)
    searchable = torch.tensor([0, 1, 1, 0, 1]).bool()  # item 3 held out
    text = _Text(torch.zeros(4, 12), torch.zeros(0, 12), searches, searchable)
    item_ids = torch.tensor([[1, 2, 3, 4, 1, 2]] * 64)
    types = torch.ones_like(item_ids)
    targets = torch.tensor([[2, 3, 4, 1, 2, 0]] * 64)
    queries = (torch.zeros(64, 6, 8), torch.zeros(64, 6, 12))
    config = TrainConfig(found_rate=0.5)
    ids, kinds, taste, search = _as_searches(
        ranker, item_ids, types, queries, targets, text, config, generator
    )
    shown = kinds == 2
    assert shown.any() and (ids[shown] == 0).all() and search[shown].abs().sum() > 0
    assert set(targets[shown].tolist()) == {1, 2, 4}  # never 3 (held out), never 0 (no target)
    assert (taste[~shown] == 0).all() and (search[~shown] == 0).all()
