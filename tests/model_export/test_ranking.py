import math

import numpy as np
import pytest

from model_export.ranking import (
    gains,
    intra_list_diversity,
    ranking_metrics,
    target_ranks,
    top_k,
    topk_overlap,
)


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


def test_gains_at_several_k_from_one_ranking():
    ranks = target_ranks(np.array([[5, 6, 7], [1, 2, 3]]), np.array([7, 9]))
    assert ranks.tolist() == [3, 0]
    assert gains(ranks, 2)["hr@2"].tolist() == [0.0, 0.0]
    at3 = gains(ranks, 3)
    assert at3["hr@3"].tolist() == [1.0, 0.0]
    assert at3["ndcg@3"][0] == pytest.approx(1 / math.log2(4))
    assert at3["mrr@3"][0] == pytest.approx(1 / 3)


def test_topk_overlap_is_the_mean_share_of_each_reference_row_found():
    reference = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    other = np.array([[4, 3, 9, 9], [5, 6, 7, 8]])  # half of row 0, all of row 1
    assert topk_overlap(reference, other) == 0.75
