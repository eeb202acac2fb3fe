"""The history ranker: a small GRU over a user's recent events, scoring the whole catalogue.

Inputs follow the ``streamrec.history/1`` feature set of :mod:`stream.manifest`: left-padded
item and event-type ids of the last ``history_length`` events, and the item ids to exclude.
Masking and top-K happen inside the graph, so the exported ONNX returns ranked lists.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

#: Score given to excluded items and padding; the worker drops anything this low.
MASK_SCORE = -1e9
NUM_EVENT_TYPES = 4  # padding, click, search, purchase


@dataclass(frozen=True)
class RankerConfig:
    """Shape of the ranker."""

    num_items: int
    history_length: int = 50
    dim: int = 64
    max_k: int = 100
    dropout: float = 0.1


class HistoryRanker(nn.Module):
    """GRU user encoder; scores are dot products with item embeddings plus a popularity bias."""

    def __init__(self, config: RankerConfig) -> None:
        super().__init__()
        self.config = config
        n, d = config.num_items + 1, config.dim
        self.item_emb = nn.Embedding(n, d, padding_idx=0)
        self.type_emb = nn.Embedding(NUM_EVENT_TYPES, d, padding_idx=0)
        self.pos_emb = nn.Parameter(torch.zeros(config.history_length, d))
        self.gru = nn.GRU(d, d, batch_first=True)
        self.out = nn.Linear(d, d)
        self.item_bias = nn.Parameter(torch.zeros(n))
        self.drop = nn.Dropout(config.dropout)
        nn.init.normal_(self.item_emb.weight, std=0.05)
        nn.init.normal_(self.pos_emb, std=0.02)

    def logits(self, item_ids: torch.Tensor, event_types: torch.Tensor) -> torch.Tensor:
        """Unmasked scores of every item, ``[batch, num_items + 1]`` (column 0 is padding)."""
        present = (event_types > 0).unsqueeze(-1).to(self.pos_emb.dtype)
        x = (self.item_emb(item_ids) + self.type_emb(event_types) + self.pos_emb) * present
        hidden, _ = self.gru(self.drop(x))
        user = self.out(hidden[:, -1])
        return user @ self.item_emb.weight.T + self.item_bias

    def forward(
        self, item_ids: torch.Tensor, event_types: torch.Tensor, exclude_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Top ``max_k`` (scores, item indices), excluded items and padding masked out."""
        scores = self.logits(item_ids, event_types)
        padding = torch.zeros_like(exclude_ids[:, :1])
        masked = torch.cat([padding, exclude_ids], dim=1)
        scores = scores.scatter(1, masked, torch.full_like(masked, 0).to(scores.dtype) + MASK_SCORE)
        values, indices = torch.topk(scores, self.config.max_k, dim=1)
        return values, indices
