"""Diversity re-ranking: maximal marginal relevance (MMR) over the model's item vectors.

Off by default (``STREAMREC_DIVERSITY=0``). With a weight ``λ`` in ``(0, 1]`` each list is
built greedily from the ranker's ``max_k`` candidates; every step takes the candidate with
the highest

    (1 - λ) · relevance - λ · (largest cosine similarity to an item already in the list)

where relevance is the ranker's score scaled to ``[0, 1]`` within the user's candidates.
``λ = 0`` keeps the ranker's order exactly; larger values trade relevance for intra-list
diversity (docs/model.md, "Diversity", has the measured trade-off). The vectors are the ranker's
own item vectors, exported as ``item_vectors.npy``. The worker, the replay tool and
``python -m model_export evaluate`` all call :func:`rerank`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stream.errors import ModelLoadError

#: Below any candidate's value: an item already in the list.
_TAKEN = -np.inf
#: Below any valid candidate but above ``_TAKEN``: masked candidates keep their order, last.
_INVALID = -1e9


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows, like padding, stay zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def load_item_vectors(path: Path, num_items: int) -> np.ndarray:
    """Read ``item_vectors.npy`` (``[num_items + 1, dim]`` float32, row 0 padding), no pickle.

    Raises:
        ModelLoadError: the file is unreadable or its shape does not fit the catalogue.
    """
    try:
        vectors = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        msg = f"cannot read item vectors {path}: {exc}; re-export the model directory"
        raise ModelLoadError(msg) from exc
    if (
        vectors.dtype != np.float32
        or vectors.ndim != 2
        or vectors.shape[0] != num_items + 1
        or not np.isfinite(vectors).all()
    ):
        msg = (
            f"{path} holds {vectors.dtype} {vectors.shape}, not finite float32 "
            f"[{num_items + 1}, dim] for this catalogue; re-export the model directory"
        )
        raise ModelLoadError(msg)
    return unit_rows(vectors)


def rerank(
    scores: np.ndarray,
    indices: np.ndarray,
    valid: np.ndarray,
    vectors: np.ndarray,
    k: int,
    weight: float,
) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` of each row's candidates in MMR order.

    Args:
        scores: ``[batch, candidates]`` ranker scores, best first.
        indices: ``[batch, candidates]`` item indices of those scores.
        valid: ``[batch, candidates]`` ``False`` for masked candidates (excluded, padding);
            they are never placed before a valid one and keep their order at the end.
        vectors: ``[num_items + 1, dim]`` unit item vectors (:func:`load_item_vectors`).
        k: list length.
        weight: ``λ`` in ``[0, 1]``; ``0`` returns the ranker's order unchanged.

    Returns:
        ``(scores, indices)`` ``[batch, min(k, candidates)]``: the ranker's scores of the
        chosen items, in list order (with ``λ > 0`` they need not decrease).
    """
    k = min(k, scores.shape[1])
    if weight <= 0:
        return scores[:, :k], indices[:, :k]
    batch, count = scores.shape
    rows = np.arange(batch)
    unit = vectors[indices]  # [batch, candidates, dim]
    similarity = unit @ unit.transpose(0, 2, 1)  # [batch, candidates, candidates]
    low = np.where(valid, scores, np.inf).min(axis=1, keepdims=True)
    high = np.where(valid, scores, -np.inf).max(axis=1, keepdims=True)
    spread = np.where(high > low, high - low, 1.0)
    relevance = np.clip((scores - low) / spread, 0.0, 1.0)
    base = np.where(valid, (1.0 - weight) * relevance, _INVALID - np.arange(count))
    closest = np.zeros((batch, count))  # nothing chosen yet: no redundancy penalty
    order = np.empty((batch, k), dtype=np.int64)
    for step in range(k):
        value = np.where(valid, base - weight * closest, base)
        if step:
            value[rows[:, None], order[:, :step]] = _TAKEN
        pick = value.argmax(axis=1)  # ties: the better-ranked candidate
        order[:, step] = pick
        chosen = similarity[rows, :, pick]  # [batch, candidates]
        closest = chosen if step == 0 else np.maximum(closest, chosen)
    return scores[rows[:, None], order], indices[rows[:, None], order]
