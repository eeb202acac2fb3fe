"""Recency-weighted item co-occurrence: the ItemKNN baseline's statistic and the ranker's prior.

``C[a, b]`` sums, over every pair of interactions of one user where ``b`` follows ``a`` at
distance ``d <= window``, the weight ``decay ** (d - 1)``; the reverse direction adds the
same times ``backward``. Built from training interactions only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CoocConfig:
    """Shape of the co-occurrence statistic (tuned on the validation split)."""

    window: int = 10
    decay: float = 0.9
    backward: float = 0.5


def cooccurrence(sequences: Iterable[np.ndarray], num_items: int, config: CoocConfig) -> np.ndarray:
    """``[num_items + 1, num_items + 1]`` float32 matrix (row/column 0 is padding, all zero)."""
    counts = np.zeros((num_items + 1, num_items + 1), dtype=np.float32)
    for seq in sequences:
        for distance in range(1, min(config.window, len(seq) - 1) + 1):
            weight = config.decay ** (distance - 1)
            before, after = seq[:-distance], seq[distance:]
            np.add.at(counts, (before, after), weight)
            np.add.at(counts, (after, before), weight * config.backward)
    counts[0, :] = 0.0
    counts[:, 0] = 0.0
    return counts
