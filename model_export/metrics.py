"""Ranking metrics under full ranking: every catalogue item competes, masked items excepted."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stream.manifest import PAD_INDEX


def masked_scores(scores: np.ndarray, excluded: Sequence[np.ndarray]) -> np.ndarray:
    """A float64 copy of ``scores`` with padding and each row's ``excluded`` items at -inf."""
    masked = np.array(scores, dtype=np.float64, copy=True)
    masked[:, PAD_INDEX] = -np.inf
    for row, items in enumerate(excluded):
        masked[row, items] = -np.inf
    return masked


def top_k(scores: np.ndarray, excluded: Sequence[np.ndarray], k: int) -> np.ndarray:
    """Indices of the ``k`` best items per row, best first; padding and ``excluded`` masked.

    Ties are broken by the lower item index, so results do not depend on sort internals.
    """
    return np.argsort(-masked_scores(scores, excluded), axis=1, kind="stable")[:, :k]


def intra_list_diversity(top: np.ndarray, vectors: np.ndarray) -> float:
    """Mean cosine distance between the items of a list, averaged over lists.

    ``vectors`` are unit rows indexed like ``top`` (``1 - cosine`` of two identical
    directions is 0; of orthogonal ones, 1).
    """
    unit = vectors[top]
    similarity = unit @ unit.transpose(0, 2, 1)
    pairs = ~np.eye(top.shape[1], dtype=bool)
    return float((1.0 - similarity[:, pairs]).mean())


def ranking_metrics(top: np.ndarray, targets: np.ndarray, num_items: int) -> dict[str, float]:
    """HR, NDCG and MRR at ``k = top.shape[1]`` for one target per row, and coverage.

    Coverage is the share of the catalogue that appears in at least one list.
    """
    k = top.shape[1]
    hit_rows, ranks = np.nonzero(top == targets[:, None])
    hr = np.zeros(len(targets))
    ndcg = np.zeros(len(targets))
    mrr = np.zeros(len(targets))
    hr[hit_rows] = 1.0
    ndcg[hit_rows] = 1.0 / np.log2(ranks + 2)
    mrr[hit_rows] = 1.0 / (ranks + 1)
    return {
        f"hr@{k}": float(hr.mean()),
        f"ndcg@{k}": float(ndcg.mean()),
        f"mrr@{k}": float(mrr.mean()),
        f"coverage@{k}": len(np.unique(top)) / num_items,
    }
