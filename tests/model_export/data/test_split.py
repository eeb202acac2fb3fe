import numpy as np

from model_export.data.split import build_split
from tests.helpers import event

ITEMS = ["a", "b", "c", "d", "e"]


def test_leave_one_out_in_time_order_with_stable_ties():
    events = [
        event(1, "c", ts=30),
        event(2, "a", ts=10),
        event(3, "b", ts=20),
        event(4, "d", ts=20),  # same ts as e3: keeps log order (b before d)
        event(5, "c", "purchase", ts=30),
        event(6, None, "search", ts=40, query="shoes"),
        event(7, "e", ts=50),
    ]
    split = build_split(events, ITEMS)
    (seq,) = split.sequences
    assert seq.items.tolist() == [1, 2, 4, 3, 3, 0, 5]  # a b d c c(purchase) search e
    assert (seq.valid_pos, seq.test_pos) == (3, 6)  # second-to-last and last click
    assert split.queries == ("shoes",)
    assert split.train_interactions("valid")[0].tolist() == [1, 2, 4]
    assert split.train_interactions("test")[0].tolist() == [1, 2, 4, 3]
    test = split.examples("test", 4, "seen")
    assert test.targets.tolist() == [5]
    assert test.item_ids.tolist() == [[4, 3, 3, 0]]  # the last 4 events before the target
    assert test.query_ids.tolist() == [[-1, -1, -1, 0]]
    assert test.excluded[0].tolist() == [1, 2, 3, 4]
    assert split.examples("test", 4, "purchased").excluded[0].tolist() == [3]
    valid = split.examples("valid", 4)
    assert valid.targets.tolist() == [3] and valid.item_ids.tolist() == [[0, 1, 2, 4]]


def test_users_with_under_three_interactions_train_but_are_not_evaluated():
    split = build_split([event(1, "a", user="v", ts=1), event(2, "b", user="v", ts=2)], ITEMS)
    assert split.evaluated() == []
    assert split.train_interactions()[0].tolist() == [1, 2]


def test_training_windows_never_target_the_validation_item():
    events = [event(i, item, ts=i) for i, item in enumerate("abcde")]
    windows = build_split(events, ITEMS).windows(history_length=3)
    # training part a b c (valid d, test e); each position targets the next click in it
    assert windows.item_ids.tolist() == [[1, 2, 3]]
    assert windows.targets.tolist() == [[2, 3, 0]]
    assert np.all(windows.targets != 4)


def test_final_fit_windows_add_the_validation_transition_but_never_the_test_item():
    events = [event(i, item, ts=i) for i, item in enumerate("abcde")]
    windows = build_split(events, ITEMS).windows(history_length=3, until="test")
    # a b c d before the test target e: windows of 3 from the newest end, left-padded
    assert windows.item_ids.tolist() == [[2, 3, 4], [0, 0, 1]]
    assert windows.targets.tolist() == [[3, 4, 0], [0, 0, 2]]
    assert np.all(windows.targets != 5)
