"""The sequence ranker: one self-contained module, configured by :class:`RankerConfig`.

Design (docs/model.md):

* **Items** are vectors in one ``dim``-space: a learned id embedding plus a projection of the
  item's text embedding from the behaviour-fine-tuned MiniLM (:mod:`model_export.text`).
  The same projection maps search queries into that space, so a search event and an item
  never clicked before are both representable.
* **Users**: a small causal transformer over the last ``history_length`` events, each the
  sum of its item vector, event-type embedding, query vector (search events) and position
  embedding; the last position's output is the user vector.
* **Scores** = user · item + ``alpha`` x a recency-weighted co-occurrence prior
  (``log1p`` of :func:`model_export.cooccurrence.cooccurrence` over the training split, with
  learned per-position weights). Exclusion and top-K run inside the graph.
* **A living catalogue.** The served graph scores the trained items and the *extra items*
  it is given as an input (items added after export, or whose text changed): each extra
  item's vector is an id part (``new_item``, learned, for an item the model never saw) plus
  its projected text, computed by the worker with the exported text tower. Training replaces
  a share (``cold_rate``) of the items' id embeddings with ``new_item`` in every batch, so
  text alone places an item where its users are. Blocked items (unavailable, removed) are
  masked for every user, as excluded ones are per user.

``use_text=False`` is the ablation without the language model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import nn

from stream.manifest import EVENT_TYPE_IDS

#: Score given to excluded items and padding (and masked attention); finite in fp16, far
#: below any real score. The worker drops anything at or below ``stream.scorer.MASKED_SCORE``.
MASK_SCORE = -30000.0
NUM_EVENT_TYPES = len(EVENT_TYPE_IDS) + 1  # padding (0), then the contract's event types
CLICK = EVENT_TYPE_IDS["click"]
TEXT_DIM = 384  # MiniLM-L6's sentence embedding size
#: Time scales (days) of the item-age terms.
AGE_SCALES_DAYS = (3.0, 14.0, 60.0)
#: Users of a batch whose probabilities make the extra items' mass (scaled to the batch).
MASS_ROWS = 32
#: An item added more than this long after a list's time has no age term in it (served as
#: it was before the age terms existed) and, in training, is masked (the shop lacked it).
RELEASE_SLACK_DAYS = 1.0


@dataclass(frozen=True)
class RankerConfig:
    """Shape of the ranker."""

    num_items: int
    history_length: int = 50
    dim: int = 64
    layers: int = 2
    heads: int = 2
    dropout: float = 0.2
    max_k: int = 100
    use_text: bool = True
    use_cooc: bool = True
    use_age: bool = True
    text_dim: int = TEXT_DIM

    def tiny(self) -> RankerConfig:
        """The small shape of tests and smoke runs (with :data:`model_export.train.TINY`)."""
        return replace(self, dim=16, history_length=20, max_k=50)


class Block(nn.Module):
    """Pre-norm transformer block with explicit attention (exports to plain ONNX ops)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, last: bool = False) -> torch.Tensor:
        """``x`` [batch, length, dim]; ``bias`` [batch, 1, length, length] additive mask.

        ``last``: only the last position's output ``[batch, 1, dim]`` (it still attends to
        every position); serving needs no other, and the rest of the block is skipped.
        """
        q, k, v = (
            t.unflatten(-1, (self.heads, -1)).transpose(1, 2)
            for t in self.qkv(self.norm1(x)).chunk(3, dim=-1)
        )
        if last:
            q, bias, x = q[:, :, -1:], bias[:, :, -1:], x[:, -1:]
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + bias, dim=-1)
        attended = (self.drop(weights) @ v).transpose(1, 2).flatten(2)
        x = x + self.drop(self.proj(attended))
        return x + self.drop(self.ff(self.norm2(x)))


class SequenceRanker(nn.Module):
    """Scores the whole catalogue for a batch of left-padded event histories."""

    item_text: torch.Tensor
    item_added: torch.Tensor
    cooc: torch.Tensor
    causal: torch.Tensor
    diagonal: torch.Tensor

    def __init__(self, config: RankerConfig) -> None:
        super().__init__()
        self.config = config
        n, d, length = config.num_items + 1, config.dim, config.history_length
        self.item_emb = nn.Embedding(n, d, padding_idx=0)
        self.type_emb = nn.Embedding(NUM_EVENT_TYPES, d, padding_idx=0)
        self.pos_emb = nn.Parameter(torch.randn(length, d) * 0.02)
        self.blocks = nn.ModuleList(
            Block(d, config.heads, config.dropout) for _ in range(config.layers)
        )
        self.norm = nn.LayerNorm(d)
        self.drop = nn.Dropout(config.dropout)
        nn.init.normal_(self.item_emb.weight, std=0.05)
        #: The id part of an item the model never trained on (added after export).
        self.new_item = nn.Parameter(torch.zeros(d))
        self.age_weights = nn.Parameter(torch.zeros(len(AGE_SCALES_DAYS)))
        #: When each trained item was added, in days since the epoch (row 0 unused).
        self.register_buffer("item_added", torch.zeros(n))
        self.text_proj = nn.Linear(config.text_dim, d) if config.use_text else None
        self.register_buffer("item_text", torch.zeros(n, config.text_dim if config.use_text else 0))
        # Co-occurrence prior: log1p counts, per-position log weights (newest last), gate.
        self.register_buffer("cooc", torch.zeros(n, n) if config.use_cooc else torch.zeros(0, 0))
        lags = torch.arange(length - 1, -1, -1, dtype=torch.float32)
        self.recency = nn.Parameter(math.log(0.7) * lags)
        self.alpha = nn.Parameter(torch.tensor(1.0))
        causal = torch.tril(torch.ones(length, length, dtype=torch.bool))
        self.register_buffer("causal", causal, persistent=False)
        self.register_buffer("diagonal", torch.eye(length, dtype=torch.bool), persistent=False)

    def set_item_text(self, embeddings: torch.Tensor) -> None:
        """Install the catalogue's text embeddings ``[num_items, text_dim]`` (row 0 = padding)."""
        self.item_text.zero_()
        self.item_text[1:] = embeddings

    def set_item_added(self, days: torch.Tensor) -> None:
        """Install when each item was added ``[num_items + 1]`` (days since the epoch)."""
        self.item_added.copy_(days)

    def age_boost(self, now: torch.Tensor, added: torch.Tensor) -> torch.Tensor:
        """``[..., items]`` score added for each item's age at ``now`` (``[..., 1]`` days).

        Computed in fp32 whatever the model's precision: days since the epoch need it. An
        item added more than :data:`RELEASE_SLACK_DAYS` after ``now`` gets nothing.
        """
        raw = now.float() - added.float()
        age = raw.clamp(min=0.0)
        weights = self.age_weights.float()
        boost = torch.zeros_like(age)
        for k, scale in enumerate(AGE_SCALES_DAYS):
            boost = boost + weights[k] * torch.exp(age * (-1.0 / scale))
        # an item added after the list's time (a clock behind, a replayed log) is not new
        return boost.masked_fill(raw < -RELEASE_SLACK_DAYS, 0.0)

    def set_cooc(self, counts: torch.Tensor) -> None:
        """Install the co-occurrence counts ``[num_items + 1, num_items + 1]``."""
        self.cooc.copy_(torch.log1p(counts))

    def project_text(self, text: torch.Tensor) -> torch.Tensor:
        """Map text embeddings (items or queries) into the item space."""
        if self.text_proj is None:
            return torch.zeros(*text.shape[:-1], self.config.dim, dtype=text.dtype)
        return self.text_proj(text)

    def id_vectors(self, cold: torch.Tensor | None = None) -> torch.Tensor:
        """The id part of each item's vector ``[num_items + 1, dim]``; row 0 is ``new_item``.

        ``cold`` (bool ``[num_items + 1]``, training) shows those items as never seen.
        """
        ids = torch.cat([self.new_item.unsqueeze(0), self.item_emb.weight[1:]])
        if cold is not None:
            ids = torch.where(cold.unsqueeze(-1), self.new_item, ids)
        return ids

    def item_matrix(self, cold: torch.Tensor | None = None) -> torch.Tensor:
        """Item vectors ``[num_items + 1, dim]`` (row 0, padding, is zeros)."""
        ids = self.id_vectors(cold)
        if self.text_proj is not None:
            ids = ids + self.text_proj(self.item_text)
        return torch.cat([torch.zeros_like(ids[:1]), ids[1:]])

    @torch.no_grad()
    def unit_item_vectors(self) -> torch.Tensor:
        """Item vectors scaled to unit length, padding row zero (diversity re-ranking)."""
        vectors = nn.functional.normalize(self.item_matrix().float(), dim=1)
        vectors[0] = 0.0
        return vectors

    def hidden(
        self,
        items: torch.Tensor,
        item_ids: torch.Tensor,
        event_types: torch.Tensor,
        query_vecs: torch.Tensor,
        last: bool = False,
    ) -> torch.Tensor:
        """User vectors at every position ``[batch, history, dim]`` (``items[item_ids]``).

        ``last``: at the last position only ``[batch, 1, dim]``, the final block computing
        nothing else (serving: the transformer does about a third less work).
        """
        present = event_types > 0
        x = items[item_ids] + self.type_emb(event_types) + query_vecs + self.pos_emb
        x = self.drop(x * present.unsqueeze(-1).to(x.dtype))
        # Attend to earlier real events; every position may attend to itself (no empty rows).
        allowed = self.causal & (present.unsqueeze(1) | self.diagonal)
        bias = torch.zeros_like(allowed, dtype=x.dtype).masked_fill(~allowed, MASK_SCORE)
        bias = bias.unsqueeze(1)
        for depth, block in enumerate(self.blocks, start=1):
            x = block(x, bias, last=last and depth == len(self.blocks))
        return self.norm(x)

    def _clicks(self, item_ids: torch.Tensor, event_types: torch.Tensor) -> torch.Tensor:
        """1.0 at clicks on known items (the events the prior counts), else 0.0."""
        return ((event_types == CLICK) & (item_ids > 0)).to(self.recency.dtype)

    def logits(
        self,
        item_ids: torch.Tensor,
        event_types: torch.Tensor,
        query_vecs: torch.Tensor,
        extra_items: torch.Tensor | None = None,
        now: torch.Tensor | None = None,
        added: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Unmasked scores at the last position ``[batch, num_items + 1 + extra]``.

        ``extra_items`` ``[extra, dim]`` are items after the trained ones (indices from
        ``num_items + 1``); the co-occurrence prior knows only the trained items. ``now``
        ``[batch]`` (days) is when each list is made; ``added`` when every item (extra ones
        included) was added, the trained items' own times by default.
        """
        items = self.item_matrix()
        if extra_items is not None:
            items = torch.cat([items, extra_items.to(items.dtype)])
        user = self.hidden(items, item_ids, event_types, query_vecs, last=True)[:, -1]
        scores = user @ items.T
        if self.config.use_cooc:
            trained = self.cooc.shape[0]
            known = torch.where(item_ids < trained, item_ids, torch.zeros_like(item_ids))
            weights = torch.exp(self.recency) * self._clicks(known, event_types)
            # fp32 scatter (ONNX Runtime has no fp16 ScatterElements-add on CPU), then cast
            histogram = (
                torch.zeros((scores.shape[0], trained), dtype=torch.float32)
                .scatter_add(1, known, weights.float())
                .to(scores.dtype)
            )
            prior = self.alpha * (histogram @ self.cooc)
            scores = scores + torch.cat([prior, torch.zeros_like(scores[:, trained:])], dim=1)
        if self.config.use_age and now is not None:
            added = self.item_added if added is None else added
            scores = scores + self.age_boost(now.unsqueeze(-1), added).to(scores.dtype)
        return scores

    def all_logits(
        self,
        item_ids: torch.Tensor,
        event_types: torch.Tensor,
        query_vecs: torch.Tensor,
        cooc: torch.Tensor | None = None,
        cold: torch.Tensor | None = None,
        days: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scores at every position ``[batch, history, num_items + 1]`` (training).

        ``cooc`` replaces the installed prior (training passes out-of-fold counts, so a
        user's own transitions never reveal their targets); ``cold`` items are shown by
        text alone (:meth:`id_vectors`) and without the prior, as new items are served;
        ``days`` ``[batch, history]`` is each position's time (item age).
        """
        items = self.item_matrix(cold)
        scores = self.hidden(items, item_ids, event_types, query_vecs) @ items.T
        if self.config.use_cooc:
            length = item_ids.shape[1]
            lag = torch.arange(length).unsqueeze(1) - torch.arange(length).unsqueeze(0)
            # position t weighs earlier position j by recency[L-1-(t-j)], as serving does at t=L-1
            per_lag = torch.exp(self.recency).flip(0)[lag.clamp(min=0)] * (lag >= 0)
            weights = per_lag.unsqueeze(0) * self._clicks(item_ids, event_types).unsqueeze(1)
            prior = self.cooc if cooc is None else cooc
            term = self.alpha * torch.bmm(weights, prior[item_ids])
            if cold is not None:
                term = term.masked_fill(cold, 0.0)
            scores = scores + term
        if self.config.use_age and days is not None:
            scores = scores + self.age_boost(days.unsqueeze(-1), self.item_added)
        return scores

    def forward(
        self,
        item_ids: torch.Tensor,
        event_types: torch.Tensor,
        query_ids: torch.Tensor,
        query_table: torch.Tensor,
        extra_items: torch.Tensor,
        extra_bias: torch.Tensor,
        blocked_ids: torch.Tensor,
        item_added: torch.Tensor,
        user_days: torch.Tensor,
        exclude_ids: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Top ``max_k`` (scores, item indices), and each extra item's probability mass.

        Search events name a row of ``query_table`` (the batch's distinct query vectors,
        row 0 zeros) in ``query_ids``; the gather runs inside the graph, so a batch sends
        one vector per distinct query instead of one per history position. Indices from
        ``num_items + 1`` are rows of ``extra_items``, whose scores get ``extra_bias`` added
        (click feedback, :mod:`stream.feedback`); ``blocked_ids`` are masked for every
        user, ``exclude_ids`` per user, padding always. ``item_added`` ``[items]`` says when
        each item (all of them, padding first) was added and ``user_days`` ``[batch]`` when
        each list is made, both in days since the epoch. The third output ``[extra]`` is each
        extra item's softmax probability before its bias, masked items none, summed over the
        batch: what the feedback compares the items' clicks with. It is summed over the first
        :data:`MASS_ROWS` users and scaled to the batch (exact up to that many), so its cost
        does not grow with the batch.
        """
        query_vecs = query_table[query_ids]
        scores = self.logits(item_ids, event_types, query_vecs, extra_items, user_days, item_added)
        blocked = blocked_ids.unsqueeze(0).expand(exclude_ids.shape[0], -1)
        masked = torch.cat([torch.zeros_like(exclude_ids[:, :1]), exclude_ids, blocked], dim=1)
        scores = scores.scatter(1, masked, torch.full(masked.shape, MASK_SCORE, dtype=scores.dtype))
        listed = scores > MASK_SCORE
        trained = self.config.num_items + 1
        # fp32 whatever the model's precision: a sum of probabilities, over the first rows
        sample = scores[:MASS_ROWS].float()
        log_total = torch.logsumexp(sample, dim=1, keepdim=True)
        probability = torch.exp(sample[:, trained:] - log_total) * listed[:MASS_ROWS, trained:]
        # scaled to the whole batch; shapes as tensors, so the graph keeps the batch dynamic
        scale = torch.ones_like(scores[:, :1]).float().sum() / torch.ones_like(sample[:, :1]).sum()
        mass = probability.sum(dim=0) * scale
        bias = torch.cat([torch.zeros(trained, dtype=scores.dtype), extra_bias.to(scores.dtype)])
        scores = torch.where(listed, scores + bias, scores)
        top, indices = torch.topk(scores, self.config.max_k, dim=1)
        return top, indices, mass
