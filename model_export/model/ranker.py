"""The sequence ranker: one self-contained module, configured by :class:`RankerConfig`.

Design (docs/model.md):

* **Items** are vectors in one ``dim``-space: a learned id embedding plus a projection of the
  item's text embedding from the behaviour-fine-tuned MiniLM (:mod:`model_export.model.text`).
  The same projection maps search queries into that space, so a search event and an item
  never clicked before are both representable. The text is a prior that an item's own
  clicks replace: a trained item's text part is weighted ``k / (k + clicks)``
  (``text_prior_clicks``, the item's clicks in the training data); a new item's text
  counts whole.
* **Users**: a small causal transformer over the last ``history_length`` events, each the
  sum of its item vector, event-type embedding, query vector (search events) and position
  embedding; the last position's output is the user vector.
* **Scores** = user · item + ``alpha`` x a recency-weighted co-occurrence prior
  (``log1p`` of :func:`model_export.model.cooccurrence.cooccurrence` over the training split, with
  learned per-position weights) + the **search term**. Exclusion and top-K run inside the
  graph.
* **The search term** (``use_search``, docs/search.md): for every search in the history,
  the query's text vector against every item's text vector (the fine-tuned MiniLM's unit
  vectors, trained and live-catalogue items alike; the similarity standardised over the
  trained catalogue by :meth:`SequenceRanker.search_vectors`), weighted by how far back the
  search is: a learned weight per number of events since it (``search_fade``) times
  ``exp(-rate x seconds since it)`` with a learned rate (``search_decay``, first a half-life
  of ``search_half_life_s``); served, the newest search weighs ``search_answer_weight``
  times its learned weight. A search answers the query now and fades as the user moves
  on.
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

from stream.contracts.manifest import EVENT_TYPE_IDS

#: Score given to excluded items and padding (and masked attention); finite in fp16, far
#: below any real score. The worker drops anything at or below ``stream.model.scorer.MASKED_SCORE``.
MASK_SCORE = -30000.0
NUM_EVENT_TYPES = len(EVENT_TYPE_IDS) + 1  # padding (0), then the contract's event types
CLICK = EVENT_TYPE_IDS["click"]
SEARCH = EVENT_TYPE_IDS["search"]
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
    use_search: bool = True  # the query–item search term (needs use_text)
    search_half_life_s: float = 1800.0  # the time fade's start; training learns the rate
    #: The list right after a search answers it: served, the newest search's learned weight
    #: (what users open next) times this, so a description ("90s sci-fi comedy") lists the
    #: items it describes, in the user's order, before the user's other favourites. 2: on
    #: the 0.8 cut's temporal stage 3 cost a typo its target (0.764) and 1 cost descriptions
    #: theirs on leave-one-out (level with frozen MiniLM); 2 meets both (docs/search.md).
    search_answer_weight: float = 2.0
    #: ``k``: a trained item's text part weighs ``k / (k + its training clicks)`` (0: whole).
    #: 20: against 5, leave-one-out NDCG@10 0.1153 vs 0.1144 (3 seeds), the text level with
    #: ``model_no_text`` on the temporal backtest at 0.6 / 0.7 / 0.8 and search unchanged
    #: (docs/model.md, "Training, export and evaluation").
    text_prior_clicks: float = 20.0
    text_dim: int = TEXT_DIM

    @property
    def search_dim(self) -> int:
        """Width of the search part of a query vector (0: no search term)."""
        return self.text_dim if self.use_text and self.use_search else 0

    @property
    def query_dim(self) -> int:
        """Width of a query (or item text) vector: the ranker part, then the search part."""
        return self.dim + self.search_dim

    def tiny(self) -> RankerConfig:
        """The small shape of tests and smoke runs (``train.TINY``)."""
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
    text_weight: torch.Tensor
    text_mean: torch.Tensor
    text_cov: torch.Tensor
    item_search: torch.Tensor
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
        #: Each trained item's text weight (:meth:`set_item_clicks`; 1 until then).
        self.register_buffer("text_weight", torch.ones(n))
        # The trained items' text vectors' mean and covariance (the search term's scale), and
        # their search vectors less that mean (what a query is compared with).
        self.register_buffer("text_mean", torch.zeros(config.search_dim))
        self.register_buffer("text_cov", torch.zeros(config.search_dim, config.search_dim))
        self.register_buffer("item_search", torch.zeros(n, config.search_dim))
        # Co-occurrence prior: log1p counts, per-position log weights (newest last), gate.
        self.register_buffer("cooc", torch.zeros(n, n) if config.use_cooc else torch.zeros(0, 0))
        lags = torch.arange(length - 1, -1, -1, dtype=torch.float32)
        self.recency = nn.Parameter(math.log(0.7) * lags)
        self.alpha = nn.Parameter(torch.tensor(1.0))
        # Search term: log weight per number of events since the search, log rate per second.
        self.search_fade = nn.Parameter(math.log(0.7) * torch.arange(length, dtype=torch.float32))
        rate = math.log(2) / config.search_half_life_s
        self.search_decay = nn.Parameter(torch.tensor(math.log(rate)))
        causal = torch.tril(torch.ones(length, length, dtype=torch.bool))
        self.register_buffer("causal", causal, persistent=False)
        self.register_buffer("diagonal", torch.eye(length, dtype=torch.bool), persistent=False)

    def set_item_text(self, embeddings: torch.Tensor) -> None:
        """Install the catalogue's text embeddings ``[num_items, text_dim]`` (row 0 = padding)."""
        self.item_text.zero_()
        self.item_text[1:] = embeddings
        if self.config.search_dim:
            texts = embeddings[:, : self.config.search_dim].double()
            centred = texts - texts.mean(dim=0)
            self.text_mean.copy_(texts.mean(dim=0))
            self.text_cov.copy_(centred.T @ centred / max(1, len(texts) - 1))
            self.item_search.zero_()
            self.item_search[1:] = centred

    def set_item_clicks(self, clicks: torch.Tensor) -> None:
        """Weigh each trained item's text by its clicks ``[num_items + 1]`` in the training data.

        ``k / (k + clicks)`` with ``k`` = ``text_prior_clicks``: an item few users clicked is
        placed mostly by its text, a popular one by its own id embedding (its text part
        fades as evidence accumulates; left whole, it pulls items with similar texts
        together and costs the next click on the items the log knows well).
        """
        k = self.config.text_prior_clicks
        self.text_weight.copy_(k / (k + clicks.float()) if k > 0 else torch.ones_like(clicks))

    def search_vectors(self, text: torch.Tensor) -> torch.Tensor:
        """Search parts of unit text vectors, each divided by the spread of its similarities.

        A query's similarity to every trained item, less its mean, over its standard
        deviation: the search term compares how far an item stands out for this query, so a
        title (one item far above the rest) and a description (many items a little above)
        weigh alike. Rows of zeros stay zeros.
        """
        vecs = text[..., : self.config.search_dim]
        variance = ((vecs @ self.text_cov.to(vecs.dtype)) * vecs).sum(dim=-1, keepdim=True)
        return vecs / torch.sqrt(variance.clamp(min=1e-4))

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

    def query_vectors(self, text: torch.Tensor) -> torch.Tensor:
        """Text embeddings to ``query_dim`` vectors: the ranker part, then the search part.

        What the exported query encoder returns for a query or an item's text.
        """
        return torch.cat([self.project_text(text), text[..., : self.config.search_dim]], dim=-1)

    def id_vectors(self, cold: torch.Tensor | None = None) -> torch.Tensor:
        """The id part of each item's vector ``[num_items + 1, dim]``; row 0 is ``new_item``.

        ``cold`` (bool ``[num_items + 1]``, training) shows those items as never seen.
        """
        ids = torch.cat([self.new_item.unsqueeze(0), self.item_emb.weight[1:]])
        if cold is not None:
            ids = torch.where(cold.unsqueeze(-1), self.new_item, ids)
        return ids

    def id_parts(self) -> torch.Tensor:
        """What the item tower adds an item's projected text to ``[num_items + 1, dim]``.

        Each trained item's vector less its whole text projection (row 0: ``new_item``): a
        trained item re-embedded from the same text gets its trained vector back, and a
        changed text moves it by the change's projection.
        """
        parts = self.id_vectors()
        if self.text_proj is not None:
            lighter = (self.text_weight - 1.0).unsqueeze(-1) * self.text_proj(self.item_text)
            parts = torch.cat([parts[:1], parts[1:] + lighter[1:]])
        return parts

    def item_matrix(self, cold: torch.Tensor | None = None) -> torch.Tensor:
        """Item vectors ``[num_items + 1, dim]`` (row 0, padding, is zeros)."""
        ids = self.id_vectors(cold)
        if self.text_proj is not None:
            weight = self.text_weight if cold is None else self.text_weight.masked_fill(cold, 1.0)
            ids = ids + self.text_proj(self.item_text) * weight.unsqueeze(-1).to(ids.dtype)
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

    def search_weights(
        self, event_types: torch.Tensor, ages: torch.Tensor | None, lags: torch.Tensor
    ) -> torch.Tensor:
        """Weight of each event's search (0 for other events), fp32, shaped like ``lags``.

        ``lags`` is how many events after it each list comes (0: the newest event), ``ages``
        how many seconds (``None``: no time passed); ``event_types`` broadcast against both.
        Outside training, a search that is the newest event weighs ``search_answer_weight``
        times its learned weight.
        """
        fade = self.search_fade.float()[lags.clamp(0, self.config.history_length - 1)]
        if not self.training and self.config.search_answer_weight != 1.0:
            fade = fade + math.log(self.config.search_answer_weight) * (lags == 0).float()
        if ages is not None:
            fade = fade - torch.exp(self.search_decay.float()) * ages.float().clamp(min=0.0)
        return torch.exp(fade) * (event_types == SEARCH).float()

    def faded_query(
        self, event_types: torch.Tensor, search_vecs: torch.Tensor, ages: torch.Tensor | None
    ) -> torch.Tensor:
        """``[batch, search_dim]``: the history's searches summed, each with its weight.

        ``search_vecs`` ``[batch, history, search_dim]`` (:meth:`search_vectors`; zeros but
        at searches), ``ages`` ``[batch, history]`` seconds before the list.
        """
        weights = self.search_weights(event_types, ages, self._lags(event_types))
        return (weights.to(search_vecs.dtype).unsqueeze(1) @ search_vecs).squeeze(1)

    def table_query(
        self,
        event_types: torch.Tensor,
        ages: torch.Tensor,
        query_ids: torch.Tensor,
        query_table: torch.Tensor,
    ) -> torch.Tensor:
        """:meth:`faded_query` from the batch's query table, as the graph computes it.

        Each distinct query is scaled once; each user's searches' weights are summed per
        query (an fp32 scatter, as for the prior), then one product with the table: no
        ``[batch, history, search_dim]`` tensor is ever made.
        """
        searches = self.search_vectors(query_table[:, self.config.dim :])
        weights = self.search_weights(event_types, ages, self._lags(event_types))
        per_query = torch.zeros((query_ids.shape[0], query_table.shape[0]), dtype=torch.float32)
        per_query = per_query.scatter_add(1, query_ids, weights)
        return per_query.to(searches.dtype) @ searches

    def _lags(self, event_types: torch.Tensor) -> torch.Tensor:
        """Events after each position of a left-padded history, newest (0) last."""
        length = self.config.history_length
        return torch.arange(length - 1, -1, -1, device=event_types.device)

    def search_term(
        self, query: torch.Tensor, extra_texts: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``[batch, items]``: a faded query (:meth:`faded_query`) against every item's text.

        Only the users with a search in their history are scored against the items; the
        others get zeros without the cost. ``extra_texts`` ``[extra, search_dim]`` are the
        extra items' unit text vectors.
        """
        searching = torch.nonzero(query.abs().sum(dim=1) > 0).squeeze(1)
        asked = query[searching]
        term = asked @ self.item_search.to(asked.dtype).T
        if extra_texts is not None:
            extra = (extra_texts - self.text_mean.to(extra_texts.dtype)).to(asked.dtype)
            term = torch.cat([term, asked @ extra.T], dim=1)
        rows = searching.unsqueeze(1).expand(-1, term.shape[1])
        return torch.zeros((query.shape[0], term.shape[1]), dtype=term.dtype).scatter(0, rows, term)

    def logits(
        self,
        item_ids: torch.Tensor,
        event_types: torch.Tensor,
        query_vecs: torch.Tensor,
        extra_items: torch.Tensor | None = None,
        now: torch.Tensor | None = None,
        added: torch.Tensor | None = None,
        search_query: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Unmasked scores at the last position ``[batch, num_items + 1 + extra]``.

        ``extra_items`` ``[extra, query_dim]`` are items after the trained ones (indices from
        ``num_items + 1``): each row the item's ranker vector, then its search vector; the
        co-occurrence prior knows only the trained items. ``now`` ``[batch]`` (days) is when
        each list is made; ``added`` when every item (extra ones included) was added, the
        trained items' own times by default. ``search_query`` ``[batch, search_dim]`` is the
        history's searches faded and summed (:meth:`faded_query`; the search term, none
        without it).
        """
        dim = self.config.dim
        items = self.item_matrix()
        extra_texts = None
        if extra_items is not None:
            items = torch.cat([items, extra_items[:, :dim].to(items.dtype)])
            extra_texts = extra_items[:, dim:]
        user = self.hidden(items, item_ids, event_types, query_vecs, last=True)[:, -1]
        scores = user @ items.T
        if self.config.use_cooc:
            trained = self.cooc.shape[0]
            known = torch.where(item_ids < trained, item_ids, torch.zeros_like(item_ids))
            weights = torch.exp(self.recency) * self._clicks(known, event_types)
            prior = self.alpha * self._prior(known, weights.unsqueeze(1)).squeeze(1)
            scores = scores + torch.cat([prior, torch.zeros_like(scores[:, trained:])], dim=1)
        if search_query is not None:  # (zeros without a search part: the graph keeps its inputs)
            scores = scores + self.search_term(search_query, extra_texts).to(scores.dtype)
        if self.config.use_age and now is not None:
            added = self.item_added if added is None else added
            scores = scores + self.age_boost(now.unsqueeze(-1), added).to(scores.dtype)
        return scores

    def _prior(
        self, item_ids: torch.Tensor, weights: torch.Tensor, cooc: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The co-occurrence prior: each row of ``weights`` sums the history items' matrix rows.

        ``weights`` ``[batch, rows, history]`` gives ``[batch, rows, items]``. Only the
        history's rows are read, not every row of the matrix through a histogram of mostly
        zeros (that was a third of one user's scoring time on CPU), and each user's sum is the
        same whatever else the batch holds. ``cooc`` replaces the installed matrix (training's
        out-of-fold counts).
        """
        matrix = self.cooc if cooc is None else cooc
        return torch.bmm(weights, matrix[item_ids])

    def all_logits(
        self,
        item_ids: torch.Tensor,
        event_types: torch.Tensor,
        query_vecs: torch.Tensor,
        cooc: torch.Tensor | None = None,
        cold: torch.Tensor | None = None,
        days: torch.Tensor | None = None,
        search_vecs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Scores at every position ``[batch, history, num_items + 1]`` (training).

        ``cooc`` replaces the installed prior (training passes out-of-fold counts, so a
        user's own transitions never reveal their targets); ``cold`` items are shown by
        text alone (:meth:`id_vectors`) and without the prior, as new items are served;
        ``days`` ``[batch, history]`` is each position's time (item age, the search term's
        time fade); ``search_vecs`` ``[batch, history, search_dim]`` the searches' text
        vectors.
        """
        items = self.item_matrix(cold)
        scores = self.hidden(items, item_ids, event_types, query_vecs) @ items.T
        if self.config.use_cooc:
            length = item_ids.shape[1]
            lag = torch.arange(length).unsqueeze(1) - torch.arange(length).unsqueeze(0)
            # position t weighs earlier position j by recency[L-1-(t-j)], as serving does at t=L-1
            per_lag = torch.exp(self.recency).flip(0)[lag.clamp(min=0)] * (lag >= 0)
            weights = per_lag.unsqueeze(0) * self._clicks(item_ids, event_types).unsqueeze(1)
            term = self.alpha * self._prior(item_ids, weights, cooc)
            if cold is not None:
                term = term.masked_fill(cold, 0.0)
            scores = scores + term
        if self.config.search_dim and search_vecs is not None:
            scores = scores + self._search_term_all(event_types, search_vecs, days)
        if self.config.use_age and days is not None:
            scores = scores + self.age_boost(days.unsqueeze(-1), self.item_added)
        return scores

    def _search_term_all(
        self, event_types: torch.Tensor, search_vecs: torch.Tensor, days: torch.Tensor | None
    ) -> torch.Tensor:
        """The search term at every position ``[batch, history, num_items + 1]`` (training).

        Each window holds few searches: only their rows are scored against the items, and
        every position sums the earlier ones with :meth:`search_weights`.
        """
        searched = event_types == SEARCH
        count = int(searched.sum(dim=1).max())
        if count == 0:
            return torch.zeros((), dtype=search_vecs.dtype)
        # each window's search positions first (in order), padded with other positions
        order = torch.argsort((~searched).to(torch.int8), dim=1, stable=True)[:, :count]
        found = searched.gather(1, order)
        vecs = search_vecs.gather(1, order.unsqueeze(-1).expand(-1, -1, search_vecs.shape[-1]))
        relevance = vecs @ self.item_search.T  # [batch, searches, items]
        positions = torch.arange(event_types.shape[1])
        lags = positions.view(1, -1, 1) - order.unsqueeze(1)  # [batch, position, search]
        ages = None
        if days is not None:
            when = days.float()
            ages = (when.unsqueeze(2) - when.gather(1, order).unsqueeze(1)) * 86_400.0
        types = torch.where(found, SEARCH, 0).unsqueeze(1)
        weights = self.search_weights(types, ages, lags) * (lags >= 0)
        return weights.to(relevance.dtype) @ relevance

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
        event_ages: torch.Tensor,
        exclude_ids: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Top ``max_k`` (scores, item indices), and each extra item's probability mass.

        Search events name a row of ``query_table`` (the batch's distinct query vectors,
        row 0 zeros) in ``query_ids``; the gather runs inside the graph, so a batch sends
        one vector per distinct query instead of one per history position. Each row is the
        query's ranker vector (fed to the transformer at the search's position) then its
        search vector (the search term, faded by events and by ``event_ages``: seconds from
        each event to the list); ``extra_items`` rows are laid out the same way. Indices from
        ``num_items + 1`` are rows of ``extra_items``, whose scores get ``extra_bias`` added
        (click feedback, :mod:`stream.model.feedback`); ``blocked_ids`` are masked for every
        user, ``exclude_ids`` per user, padding always. ``item_added`` ``[items]`` says when
        each item (all of them, padding first) was added and ``user_days`` ``[batch]`` when
        each list is made, both in days since the epoch. The third output ``[extra]`` is each
        extra item's softmax probability before its bias, masked items none, summed over the
        batch: what the feedback compares the items' clicks with. It is summed over the first
        :data:`MASS_ROWS` users and scaled to the batch (exact up to that many), so its cost
        does not grow with the batch.
        """
        dim = self.config.dim
        scores = self.logits(
            item_ids,
            event_types,
            query_table[:, :dim][query_ids],
            extra_items,
            user_days,
            item_added,
            search_query=self.table_query(event_types, event_ages, query_ids, query_table),
        )
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
