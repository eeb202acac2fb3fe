"""Ranking metrics, defined once for offline evaluation and the replay tool.

Under full ranking every catalogue item competes, masked items excepted. One target per
list: HR@k (hit), NDCG@k (``1 / log2(rank + 1)``) and MRR@k (``1 / rank``), with ranks from 1;
catalogue coverage; intra-list diversity; the overlap of two rankings of the same users.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stream.contracts.manifest import PAD_INDEX


def topk_overlap(reference: np.ndarray, other: np.ndarray) -> float:
    """Mean share of each ``reference`` row's items found in the same row of ``other``.

    Both are ``[users, k]`` item indices (e.g. two rankers' top-10s for the same users).
    """
    k = reference.shape[1]
    pairs = zip(reference.tolist(), other.tolist(), strict=True)
    return float(np.mean([len(set(a) & set(b)) / k for a, b in pairs]))


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


def target_ranks(top: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Rank (from 1) of each row's target in its list ``top``; 0 where it is absent."""
    ranks = np.zeros(len(targets), dtype=np.int64)
    hit_rows, positions = np.nonzero(top == targets[:, None])
    ranks[hit_rows] = positions + 1
    return ranks


def gains(ranks: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per-list HR, NDCG and MRR at ``k`` from :func:`target_ranks` (0 = miss)."""
    hit = (ranks > 0) & (ranks <= k)
    safe = np.where(hit, ranks, 1)
    return {
        f"hr@{k}": hit.astype(np.float64),
        f"ndcg@{k}": np.where(hit, 1.0 / np.log2(safe + 1), 0.0),
        f"mrr@{k}": np.where(hit, 1.0 / safe, 0.0),
    }


def ranking_metrics(top: np.ndarray, targets: np.ndarray, num_items: int) -> dict[str, float]:
    """HR, NDCG and MRR at ``k = top.shape[1]`` for one target per row, and coverage.

    Coverage is the share of the catalogue that appears in at least one list.
    """
    k = top.shape[1]
    means = {name: float(g.mean()) for name, g in gains(target_ranks(top, targets), k).items()}
    return {**means, f"coverage@{k}": len(np.unique(top)) / num_items}
