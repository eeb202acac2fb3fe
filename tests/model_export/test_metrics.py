import math

import numpy as np
import pytest

from model_export.baselines import ItemKNNConfig, itemknn_scores
from model_export.cooccurrence import CoocConfig, cooccurrence
from model_export.metrics import intra_list_diversity, ranking_metrics, top_k


def test_top_k_masks_padding_and_excluded_and_breaks_ties_by_index():
    scores = np.array([[9.0, 1.0, 5.0, 5.0, 7.0], [9.0, 3.0, 2.0, 1.0, 0.0]])
    top = top_k(scores, [np.array([4]), np.array([], dtype=np.int64)], 3)
    assert top.tolist() == [[2, 3, 1], [1, 2, 3]]


def test_metrics_by_hand():
    top = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9], [1, 4, 7]])
    targets = np.array([1, 6, 10, 4])  # ranks 1, 3, miss, 2
    m = ranking_metrics(top, targets, num_items=20)
    assert m["hr@3"] == pytest.approx(3 / 4)
    assert m["ndcg@3"] == pytest.approx((1 + 1 / math.log2(4) + 1 / math.log2(3)) / 4)
    assert m["mrr@3"] == pytest.approx((1 + 1 / 3 + 1 / 2) / 4)
    assert m["coverage@3"] == pytest.approx(9 / 20)


def test_intra_list_diversity_by_hand():
    vectors = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    # list 1: two identical items (distance 0); list 2: orthogonal items (distance 1)
    assert intra_list_diversity(np.array([[1, 2]]), vectors) == pytest.approx(0.0)
    assert intra_list_diversity(np.array([[1, 3]]), vectors) == pytest.approx(1.0)
    # three items: pairs (1,2)=0, (1,3)=1, (2,3)=1
    assert intra_list_diversity(np.array([[1, 2, 3]]), vectors) == pytest.approx(2 / 3)


def test_cooccurrence_counts_by_hand():
    counts = cooccurrence([np.array([1, 2, 3])], 3, CoocConfig(window=2, decay=0.5, backward=0.1))
    assert counts[1, 2] == pytest.approx(1.0) and counts[2, 3] == pytest.approx(1.0)
    assert counts[1, 3] == pytest.approx(0.5)  # distance 2
    assert counts[2, 1] == pytest.approx(0.1) and counts[3, 1] == pytest.approx(0.05)
    assert counts[0].sum() == 0 and counts[:, 0].sum() == 0


def test_itemknn_weighs_recent_history_more():
    counts = np.zeros((4, 4), dtype=np.float32)
    counts[1, 2] = 1.0  # after 1 comes 2
    counts[3, 1] = 1.0  # after 3 comes 1
    scores = itemknn_scores(counts, [np.array([1, 3])], ItemKNNConfig(history_decay=0.5))
    assert scores[0, 1] > scores[0, 2]  # 3 is newer than 1
