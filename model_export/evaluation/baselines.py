"""Baselines scored by the same code and split as the model: most-popular and ItemKNN.

ItemKNN is recency-weighted item co-occurrence (:mod:`model_export.model.cooccurrence`): a user's
score for item ``j`` is ``sum_t history_decay ** age_t * C[item_t, j]`` over their last
``history_length`` interactions (age 0 = newest). Its window, decay and history decay are
tuned on the validation split (:func:`tune_itemknn`), never on test.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from model_export.data.split import EvalExamples, Split, Target
from model_export.model.cooccurrence import CoocConfig, cooccurrence
from model_export.ranking import ranking_metrics, top_k

#: The validation grid searched by :func:`tune_itemknn`.
WINDOWS = (3, 5, 10, 20)
DECAYS = (0.6, 0.8, 0.9)
HISTORY_DECAYS = (0.5, 0.7, 0.9)


def most_popular(split: Split, until: Target, users: int) -> np.ndarray:
    """Interaction counts before the ``until`` targets, the same row for every user."""
    counts = np.zeros(split.num_items + 1)
    for seq in split.train_interactions(until):
        np.add.at(counts, seq, 1.0)
    return np.tile(counts, (users, 1))


@dataclass(frozen=True)
class ItemKNNConfig:
    """ItemKNN's knobs."""

    cooc: CoocConfig = field(default_factory=CoocConfig)
    history_decay: float = 0.7
    history_length: int = 30


def itemknn_scores(
    counts: np.ndarray, histories: Sequence[np.ndarray], config: ItemKNNConfig
) -> np.ndarray:
    """Scores ``[users, num_items + 1]`` from co-occurrence ``counts`` and each history."""
    weights = np.zeros((len(histories), counts.shape[0]), dtype=np.float32)
    for row, history in enumerate(histories):
        recent = history[-config.history_length :]
        ages = np.arange(len(recent))[::-1]
        np.add.at(weights[row], recent, config.history_decay**ages)
    return weights @ counts


def itemknn(
    split: Split, until: Target, examples: EvalExamples, config: ItemKNNConfig
) -> np.ndarray:
    """ItemKNN scores for ``examples``, with counts from interactions before ``until``."""
    counts = cooccurrence(split.train_interactions(until), split.num_items, config.cooc)
    return itemknn_scores(counts, examples.histories, config)


def tune_itemknn(split: Split, valid: EvalExamples, k: int = 10) -> tuple[ItemKNNConfig, float]:
    """The grid point with the best validation NDCG@k, and that NDCG."""
    best = (ItemKNNConfig(), -1.0)
    for window, decay in itertools.product(WINDOWS, DECAYS):
        cooc = CoocConfig(window=window, decay=decay)
        counts = cooccurrence(split.train_interactions("valid"), split.num_items, cooc)
        for history_decay in HISTORY_DECAYS:
            config = replace(ItemKNNConfig(), cooc=cooc, history_decay=history_decay)
            scores = itemknn_scores(counts, valid.histories, config)
            top = top_k(scores, valid.excluded, k)
            ndcg = ranking_metrics(top, valid.targets, split.num_items)[f"ndcg@{k}"]
            if ndcg > best[1]:
                best = (config, ndcg)
    return best
