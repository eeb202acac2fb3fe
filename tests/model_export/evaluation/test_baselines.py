import numpy as np
import pytest

from model_export.evaluation.baselines import ItemKNNConfig, itemknn_scores
from model_export.model.cooccurrence import CoocConfig, cooccurrence


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
