import numpy as np
import torch

from model_export.split import build_split
from model_export.train import _excluded
from tests.model_export.test_split import ITEMS, ev


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
    split = build_split([ev(i, "u", "click", i, item) for i, item in enumerate("abcde")], ITEMS)
    windows = split.windows(history_length=3, until="test")
    assert windows.item_ids.tolist() == [[2, 3, 4], [0, 0, 1]]
    assert excluded_sets(split, windows, "seen") == [
        [{2}, {2, 3}, {2, 3, 4}],  # a (1), before this window, stays a candidate
        [set(), set(), {1}],
    ]


def test_a_position_target_is_never_masked_and_purchased_masks_purchases_only():
    events = [
        ev(1, "u", "click", 1, "a"),
        ev(2, "u", "purchase", 2, "a"),
        ev(3, "u", "click", 3, "b"),
        ev(4, "u", "click", 4, "a"),  # a again: the target of b's position
        ev(5, "u", "click", 5, "c"),  # validation
        ev(6, "u", "click", 6, "d"),  # test
    ]
    split = build_split(events, ITEMS)
    windows = split.windows(history_length=4)
    assert windows.item_ids.tolist() == [[1, 1, 2, 1]]
    assert windows.targets.tolist() == [[2, 2, 1, 0]]
    assert excluded_sets(split, windows, "seen") == [[{1}, {1}, {2}, {1, 2}]]
    assert excluded_sets(split, windows, "purchased") == [[set(), {1}, set(), {1}]]
