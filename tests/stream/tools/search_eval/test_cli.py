"""The search benchmark's arithmetic, and a run over a real (tiny) model's whole catalogue."""

from __future__ import annotations

import numpy as np

from stream.tools.search_eval.cli import (
    bm25,
    ndcg_at_10,
    ranks,
)


def test_ranks_count_ties_against_the_target() -> None:
    scores = np.array([[0.9, 0.5, 0.1], [0.5, 0.5, 0.1], [0.1, 0.2, 0.3]])
    assert ranks(scores, np.array([0, 1, 0])).tolist() == [0, 1, 2]


def test_ndcg_is_one_for_the_ideal_order_and_less_otherwise() -> None:
    relevance = np.array([[2.0, 1.0, 0.0] + [0.0] * 9])
    assert ndcg_at_10(np.array([[3.0, 2.0, 1.0] + [0.0] * 9]), relevance)[0] == 1.0
    assert ndcg_at_10(np.array([[1.0, 2.0, 3.0] + [0.0] * 9]), relevance)[0] < 1.0
    assert ndcg_at_10(np.zeros((1, 12)), np.zeros((1, 12)))[0] == 0.0


def test_bm25_prefers_the_document_holding_the_rare_word() -> None:
    docs = ["star wars | sci-fi", "star trek | sci-fi", "fargo | crime"]
    assert bm25(["wars"], docs).argmax() == 0
    assert bm25(["fargo crime"], docs).argmax() == 2
    assert bm25(["nothing matches"], docs).max() == 0.0


