import numpy as np
import pytest

from stream.errors import ModelLoadError
from stream.model.diversity import load_item_vectors, rerank, unit_rows

# item 1 and 2 point the same way, item 3 is orthogonal to both; row 0 is padding
VECTORS = unit_rows(np.array([[0, 0], [1, 0], [2, 0], [0, 1]], dtype=np.float32))


def ranked(weight, scores=(3.0, 2.9, 1.0), items=(1, 2, 3), valid=(True, True, True), k=3):
    out_scores, out_items = rerank(
        np.array([scores]), np.array([items]), np.array([valid]), VECTORS, k, weight
    )
    return out_items[0].tolist(), out_scores[0].tolist()


def test_weight_zero_keeps_the_rankers_order():
    assert ranked(0.0) == ([1, 2, 3], [3.0, 2.9, 1.0])


def test_mmr_by_hand():
    # relevance scaled to [1, 0.95, 0]; after item 1: item 2 = 0.5*0.95 - 0.5*1 = -0.025,
    # item 3 = 0.5*0 - 0.5*0 = 0, so the orthogonal item 3 comes second
    assert ranked(0.5) == ([1, 3, 2], [3.0, 1.0, 2.9])
    # a small weight still prefers relevance: item 2 = 0.9*0.95 - 0.1 = 0.755 > item 3 = 0
    assert ranked(0.1)[0] == [1, 2, 3]


def test_masked_candidates_stay_last_in_their_order():
    items, _ = ranked(
        0.9, scores=(3.0, -1e4, 1.0, -1e4), items=(1, 2, 3, 0), valid=(1, 0, 1, 0), k=4
    )
    assert items == [1, 3, 2, 0]


def test_k_shorter_than_the_candidates():
    assert ranked(0.5, k=2)[0] == [1, 3]


def test_item_vectors_are_read_without_pickle_and_checked(tmp_path):
    good = tmp_path / "good.npy"
    np.save(good, np.array([[0, 0], [3, 4]], dtype=np.float32))
    assert load_item_vectors(good, 1) == pytest.approx(np.array([[0, 0], [0.6, 0.8]]))
    with pytest.raises(ModelLoadError, match=r"\[3, dim\]"):
        load_item_vectors(good, 2)
    pickled = tmp_path / "pickled.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ModelLoadError, match="re-export"):
        load_item_vectors(pickled, 0)
