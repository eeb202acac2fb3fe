"""Training: fine-tune MiniLM on behaviour, then the sequence ranker, early-stopped on NDCG@10.

1. **Text encoder** (:mod:`model_export.model.text`): contrastive pairs from the training split, an
   item with the item clicked next, and a query as people type it with the item it names
   (:func:`training_queries`: the exact title, the title as said, without year or article,
   its first words, a typo, lower case, a decade-and-genre description), never for the
   held-out items (``search_held_out``, :func:`model_export.data.search_queries.held_out`).
2. **Ranker** (:mod:`model_export.model.ranker`): every training event predicts the user's next
   click; softmax over the catalogue (cross-entropy) less what a list there could not
   show (items the window's events up to it exclude, items not added yet), AdamW. Each
   batch is followed by a copy of half its windows (``search_rows``) in which a share of
   the events before a click (``found_rate``) is shown as a search for the item clicked
   next, its query drawn from the item's query families, so the query path and the search
   term's weight and fade are trained (held-out items are never searched for) while every
   window still teaches the next click from its whole history.
   After each epoch the validation split is scored (full ranking, exclusion policy
   applied); training stops after ``patience`` epochs without a better NDCG@10 and keeps
   the best epoch.
3. **Final fit** (optional): the ranker is trained again, same seed, for that many epochs on
   everything before the test target (evaluation) or on the whole log (a model to serve),
   so the newest transitions, held out for early stopping, are not lost.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer
from tqdm import tqdm

from model_export.data.search_queries import (
    TITLE_FAMILIES,
    descriptive_query,
    held_out,
    title_queries,
)
from model_export.data.split import PURCHASE, EvalExamples, Horizon, Split, TrainWindows
from model_export.model.cooccurrence import CoocConfig, cooccurrence
from model_export.model.ranker import (
    MASK_SCORE,
    RELEASE_SLACK_DAYS,
    RankerConfig,
    SequenceRanker,
)
from model_export.model.text import TextConfig, TextEncoder, embed, finetune, text_tokenizer
from model_export.ranking import ranking_metrics, top_k
from stream.contracts.manifest import EVENT_TYPE_IDS, PAD_INDEX
from stream.settings import ExcludePolicy

SEARCH = EVENT_TYPE_IDS["search"]
QUERY_SEPARATOR = " | "


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (defaults: the full MovieLens model; docs/model.md says how long)."""

    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    patience: int = 3
    seed: int = 7
    found_rate: float = 0.2  # share of a copied window's events shown as a search for the next
    search_rows: float = 0.5  # share of each batch's windows copied with searches in them
    max_windows: int = 0  # 0 = all; small values make a tiny model for tests
    cooc_folds: int = 5  # out-of-fold co-occurrence priors in training (< 2: no folds)
    text_pairs: int = 20_000
    text_query_share: float = 0.8  # share of the text pairs that name an item by a query
    search_held_out: float = 0.1  # share of items whose queries are never trained on
    cold_rate: float = 0.1  # share of items shown by text alone in each batch (new items)
    mask_unreleased: bool = True  # items added over a day after a position: not candidates
    exclude: ExcludePolicy = "seen"
    mask_excluded: bool = True  # items a list there would exclude: not candidates
    text: TextConfig = field(default_factory=TextConfig)
    cooc: CoocConfig = field(default_factory=CoocConfig)


#: A small, fast configuration for tests and smoke runs (under a minute on 2 cores).
TINY = TrainConfig(epochs=3, max_windows=4000, text_pairs=500, text=TextConfig(steps=4))


@dataclass
class TrainedModel:
    """A trained ranker with the text encoder that feeds it (``None`` without text)."""

    ranker: SequenceRanker
    encoder: TextEncoder | None
    tokenizer: Tokenizer | None
    report: dict[str, Any]


@dataclass(frozen=True)
class _Text:
    """The fine-tuned encoder's vectors the ranker trains with (empty without text)."""

    items: torch.Tensor  # [num_items, text_dim]
    queries: torch.Tensor  # [len(split.queries), text_dim]
    #: [families, num_items + 1, text_dim]: each item's query of each family; row 0 zeros
    searches: torch.Tensor
    searchable: torch.Tensor  # bool [num_items + 1]: items whose queries are trained on


@dataclass(frozen=True)
class _Batch:
    """One training batch, rows first."""

    item_ids: torch.Tensor
    event_types: torch.Tensor
    queries: torch.Tensor  # ranker-space query vectors
    search: torch.Tensor  # the search side's query vectors
    targets: torch.Tensor
    days: torch.Tensor
    excluded: torch.Tensor | None  # items the loss may not rank (``None``: none masked)


@dataclass(frozen=True)
class _Fit:
    windows: int
    history: list[dict[str, float]]


def seed_everything(seed: int) -> None:
    """Fix every random source used in training."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def training_queries(text: str, seed: int) -> list[str]:
    """An item's queries as people type them: one per title family, then a description.

    :mod:`model_export.data.search_queries` says how each is made; an item without a year or a
    genre has its exact title again in place of a description.
    """
    queries = title_queries(text, seed)
    described = descriptive_query(text, seed)
    return [queries[f] for f in TITLE_FAMILIES] + [
        described.text if described else queries["exact"]
    ]


def searchable_items(split: Split, share: float) -> np.ndarray:
    """Bool ``[num_items + 1]``: items whose queries may be trained on (not held out)."""
    ids = split.item_ids or tuple(str(i) for i in range(1, split.num_items + 1))
    return np.array([False] + [not held_out(i, share) for i in ids])


def text_pairs(
    split: Split,
    texts: Sequence[str],
    searchable: np.ndarray,
    limit: int,
    seed: int,
    query_share: float = 0.8,
) -> list[tuple[str, str]]:
    """(item, next item) and (query, item) text pairs from the training split.

    ``query_share`` of the pairs name a searchable item by one of its queries (a family and
    a typo drawn per pair), the others follow clicks.
    """
    rng = random.Random(seed)  # noqa: S311 - reproducible sampling, not security
    follow = [
        (texts[a - 1], texts[b - 1])
        for seq in split.train_interactions()
        for a, b in zip(seq[:-1].tolist(), seq[1:].tolist(), strict=True)
        if a != b
    ]
    rng.shuffle(follow)
    follow = follow[: int(limit * (1 - query_share))]
    named_items = [i for i in range(len(texts)) if searchable[i + 1]]
    named = []
    for n in range(limit - len(follow) if named_items else 0):
        item = named_items[n % len(named_items)]  # each round over the items draws anew
        queries = training_queries(texts[item], seed + n // len(named_items))
        named.append((rng.choice(queries), texts[item]))
    rng.shuffle(named)
    return follow + named


def query_vectors(
    ranker: SequenceRanker, query_ids: torch.Tensor, query_text: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Ranker-space and search vectors for ``query_ids`` (``-1``: no query, zero vectors)."""
    has = query_ids >= 0
    text = torch.zeros(*query_ids.shape, ranker.config.text_dim)
    if has.any():
        text[has] = query_text[query_ids[has]]
    return ranker.project_text(text) * has.unsqueeze(-1), ranker.search_vectors(text)


@torch.no_grad()
def predict(
    ranker: SequenceRanker, examples: EvalExamples, query_text: torch.Tensor, batch: int = 512
) -> np.ndarray:
    """Unmasked scores ``[users, num_items + 1]`` for evaluation examples."""
    ranker.eval()
    parts = []
    for start in range(0, len(examples.targets), batch):
        rows = slice(start, start + batch)
        item_ids = torch.from_numpy(examples.item_ids[rows])
        event_types = torch.from_numpy(examples.event_types[rows])
        queries, search = query_vectors(
            ranker, torch.from_numpy(examples.query_ids[rows]), query_text
        )
        now = torch.from_numpy(examples.days[rows]).float()
        query = ranker.faded_query(event_types, search, None)  # MovieLens has no search times
        scores = ranker.logits(item_ids, event_types, queries, now=now, search_query=query)
        parts.append(scores.numpy())
    return np.concatenate(parts)


def evaluate_ranker(
    ranker: SequenceRanker, examples: EvalExamples, query_text: torch.Tensor, k: int = 10
) -> dict[str, float]:
    """HR/NDCG/MRR/coverage@k under full ranking with the examples' exclusions."""
    top = top_k(predict(ranker, examples, query_text), examples.excluded, k)
    return ranking_metrics(top, examples.targets, ranker.config.num_items)


def fit_cooc(
    ranker: SequenceRanker, split: Split, until: Horizon, config: CoocConfig
) -> np.ndarray | None:
    """Install the co-occurrence prior counted over interactions before ``until``.

    Early-stopped training uses ``valid`` (nothing it is validated on); the final fit for
    the test evaluation uses ``test``, as the baselines do; a model to serve uses ``all``.
    Returns the counts (``None`` for a ranker without the prior).
    """
    if not ranker.config.use_cooc:
        return None
    counts = cooccurrence(split.train_interactions(until), split.num_items, config)
    ranker.set_cooc(torch.from_numpy(counts))
    return counts


def item_clicks(split: Split, until: Horizon) -> torch.Tensor:
    """Clicks on each item ``[num_items + 1]`` in the interactions before ``until``."""
    interactions = split.train_interactions(until)
    flat = np.concatenate(interactions) if interactions else np.zeros(0, dtype=np.int64)
    return torch.from_numpy(np.bincount(flat, minlength=split.num_items + 1)).float()


def train(
    split: Split,
    texts: Sequence[str],
    model_config: RankerConfig,
    config: TrainConfig,
    *,
    final_fit: Horizon | None = None,
    progress: bool = True,
) -> TrainedModel:
    """Train on ``split`` over a catalogue whose item ``i + 1`` has text ``texts[i]``.

    The ranker trains on events before each validation target and early-stops on the
    validation NDCG@10. With ``final_fit`` (``test`` for the test evaluation, ``all`` for a
    model to serve) it is then trained again from the same seed for the chosen number of
    epochs on every event before that horizon, with the prior counted over the same events:
    the epoch count is chosen on validation, the final model sees all the data it may.
    """
    seed_everything(config.seed)
    started = time.perf_counter()
    report: dict[str, Any] = {"train_config": asdict(config), "model_config": asdict(model_config)}
    ranker = SequenceRanker(model_config)
    added = torch.from_numpy(split.added_days).float()
    ranker.set_item_added(added)
    encoder = tokenizer = None
    searchable = searchable_items(split, config.search_held_out)
    text = _Text(*(torch.zeros(0, 0),) * 3, torch.from_numpy(searchable))
    if model_config.use_text:
        encoder = TextEncoder.from_pretrained()
        tokenizer = text_tokenizer(config.text.max_tokens)
        pairs = text_pairs(
            split, texts, searchable, config.text_pairs, config.seed, config.text_query_share
        )
        report["text_finetune"] = finetune(
            encoder, tokenizer, pairs, config.text, seed=config.seed, progress=progress
        )
        report["search_held_out_items"] = int((~searchable[1:]).sum())
        item_text = embed(encoder, tokenizer, texts)
        per_item = [training_queries(t, config.seed) for t in texts]
        flat = embed(encoder, tokenizer, [q for queries in per_item for q in queries])
        searches = flat.reshape(len(texts), len(per_item[0]), -1).transpose(1, 0, 2)
        searches = np.concatenate([np.zeros_like(searches[:, :1]), searches], axis=1)
        text = _Text(
            items=torch.from_numpy(item_text),
            queries=torch.from_numpy(embed(encoder, tokenizer, split.queries)),
            searches=torch.from_numpy(searches),
            searchable=text.searchable,
        )
        ranker.set_item_text(text.items)
    report["text_seconds"] = round(time.perf_counter() - started, 1)
    valid = split.examples("valid", model_config.history_length, config.exclude)
    fit = _fit(ranker, split, "valid", text, config, config.epochs, valid, progress)
    best = max(fit.history, key=lambda h: (h["ndcg@10"], -h["epoch"]))
    best_epoch = int(best["epoch"])
    report.update(
        train_windows=fit.windows,
        valid_users=len(valid.targets),
        history=fit.history,
        best_epoch=best_epoch,
        valid=best,
    )
    if final_fit is not None:
        seed_everything(config.seed)
        ranker = SequenceRanker(model_config)
        ranker.set_item_added(added)
        if model_config.use_text:
            ranker.set_item_text(text.items)
        refit = _fit(ranker, split, final_fit, text, config, best_epoch, None, progress)
        report["final_fit"] = {
            "until": final_fit,
            "epochs": best_epoch,
            "windows": refit.windows,
            "history": refit.history,
        }
    ranker.eval()
    report["seconds"] = round(time.perf_counter() - started, 1)
    return TrainedModel(ranker, encoder, tokenizer, report)


def _fit(
    ranker: SequenceRanker,
    split: Split,
    until: Horizon,
    text: _Text,
    config: TrainConfig,
    epochs: int,
    valid: EvalExamples | None,
    progress: bool,
) -> _Fit:
    """Train ``ranker`` for up to ``epochs`` epochs on the events before ``until``.

    Installs the prior and the text's click weights counted over those events. With
    ``valid`` examples, scores them after every epoch, stops after ``patience`` epochs
    without a better NDCG@10 and restores the best epoch's weights.
    """
    counts = fit_cooc(ranker, split, until, config.cooc)
    if ranker.config.use_text:
        ranker.set_item_clicks(item_clicks(split, until))
    folds = _cooc_folds(split, until, counts, config) if counts is not None else []
    windows = split.windows(ranker.config.history_length, until)
    count = len(windows.targets)
    if config.max_windows:
        count = min(count, config.max_windows)
    windows = _subset(windows, np.random.permutation(len(windows.targets))[:count])
    optimiser = torch.optim.AdamW(
        ranker.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    generator = torch.Generator().manual_seed(config.seed)
    history: list[dict[str, float]] = []
    best: tuple[float, int, dict[str, torch.Tensor]] = (-1.0, 0, {})
    for epoch in range(1, epochs + 1):
        ranker.train()
        batches = _fold_batches(windows.users, len(folds), config.batch_size)
        total = 0.0
        bar = tqdm(batches, desc=f"ranker epoch {epoch} (until {until})", disable=not progress)
        for fold, rows in bar:
            item_ids = torch.from_numpy(windows.item_ids[rows])
            event_types = torch.from_numpy(windows.event_types[rows])
            queries, search = query_vectors(
                ranker, torch.from_numpy(windows.query_ids[rows]), text.queries
            )
            targets = torch.from_numpy(windows.targets[rows])
            excluded = (
                _excluded(item_ids, event_types, targets, config.exclude, ranker.config.num_items)
                if config.mask_excluded and config.exclude != "none"
                else None
            )
            days = torch.from_numpy(windows.days[rows])
            batch = _Batch(item_ids, event_types, queries, search, targets, days, excluded)
            if ranker.config.use_text and config.found_rate > 0:
                batch = _with_searches(ranker, batch, text, config, generator)
            keep = batch.targets > 0
            prior = folds[fold] if folds else None
            cold = _cold_items(ranker.config.num_items, config.cold_rate, generator)
            logits = ranker.all_logits(
                batch.item_ids,
                batch.event_types,
                batch.queries,
                prior,
                cold,
                batch.days,
                batch.search,
            )
            if config.mask_unreleased:
                logits = _released(logits, ranker.item_added, batch.days, batch.targets)
            if batch.excluded is not None:
                logits = logits.masked_fill(batch.excluded, MASK_SCORE)
            logits = logits[keep]
            loss = torch.nn.functional.cross_entropy(logits, batch.targets[keep])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(rows)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        entry = {"epoch": epoch, "loss": round(total / max(count, 1), 4)}
        history.append(entry)
        if valid is None:
            continue
        entry.update(evaluate_ranker(ranker, valid, text.queries))
        if progress:
            print(f"epoch {epoch}: valid hr@10 {entry['hr@10']:.4f} ndcg@10 {entry['ndcg@10']:.4f}")
        if entry["ndcg@10"] > best[0]:
            best = (entry["ndcg@10"], epoch, copy.deepcopy(ranker.state_dict()))
        elif epoch - best[1] >= config.patience:
            break
    if valid is not None:
        ranker.load_state_dict(best[2])
    return _Fit(count, history)


def _cooc_folds(
    split: Split, until: Horizon, total: np.ndarray, config: TrainConfig
) -> list[torch.Tensor]:
    """Out-of-fold priors: fold ``f`` counts every user except those with index ``% F == f``.

    ``total`` is the prior's count over the events before ``until``. It contains each training
    target's own transition, which the model would learn to trust; at validation and
    serving time it cannot.
    """
    if config.cooc_folds < 2:
        return []
    interactions = split.train_interactions(until)
    priors = []
    for fold in range(config.cooc_folds):
        own = cooccurrence(interactions[fold :: config.cooc_folds], split.num_items, config.cooc)
        priors.append(torch.log1p(torch.from_numpy(np.maximum(total - own, 0.0))))
    return priors


def _fold_batches(users: np.ndarray, folds: int, batch_size: int) -> list[tuple[int, np.ndarray]]:
    """Shuffled batches of window rows, each drawn from users of one fold."""
    groups = (
        [np.flatnonzero(users % folds == f) for f in range(folds)]
        if folds
        else [np.arange(len(users))]
    )
    batches = []
    for fold, rows in enumerate(groups):
        rows = np.random.permutation(rows)
        batches += [(fold, rows[i : i + batch_size]) for i in range(0, len(rows), batch_size)]
    return [batches[i] for i in np.random.permutation(len(batches))]


def _released(
    logits: torch.Tensor, added: torch.Tensor, days: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """Mask items added more than a day after each position (never a position's target)."""
    later = added.view(1, 1, -1) > days.unsqueeze(-1) + RELEASE_SLACK_DAYS
    later = later.scatter(-1, targets.unsqueeze(-1), False)
    return logits.masked_fill(later, MASK_SCORE)


def _excluded(
    item_ids: torch.Tensor,
    event_types: torch.Tensor,
    targets: torch.Tensor,
    policy: ExcludePolicy,
    num_items: int,
) -> torch.Tensor:
    """Items a list would exclude at each position, among the window's events up to it.

    Bool ``[windows, history, num_items + 1]``: the items of the window's events up to and
    including each position under ``policy`` (``purchased``: purchases only), never the
    position's own target. Items from before the window stay candidates: masking every
    earlier item measured worse (docs/model.md).
    """
    if policy == "purchased":
        item_ids = item_ids.masked_fill(event_types != PURCHASE, 0)
    rows, length = item_ids.shape
    positions = torch.arange(length)
    first = torch.full((rows, num_items + 1), length)  # each item's first position in a window
    first.scatter_reduce_(1, item_ids, positions.expand(rows, -1), reduce="amin")
    excluded = first.unsqueeze(1) <= positions.view(1, -1, 1)
    excluded[..., PAD_INDEX] = False
    return excluded.scatter_(-1, targets.unsqueeze(-1), False)


def _cold_items(num_items: int, rate: float, generator: torch.Generator) -> torch.Tensor | None:
    """Items shown as never seen in one batch (bool ``[num_items + 1]``), or ``None``."""
    if rate <= 0:
        return None
    cold = torch.rand(num_items + 1, generator=generator) < rate
    cold[0] = False
    return cold


def _subset(windows: TrainWindows, rows: np.ndarray) -> TrainWindows:
    return TrainWindows(
        windows.item_ids[rows],
        windows.event_types[rows],
        windows.query_ids[rows],
        windows.targets[rows],
        windows.users[rows],
        windows.days[rows],
    )


def _with_searches(
    ranker: SequenceRanker,
    batch: _Batch,
    text: _Text,
    config: TrainConfig,
    generator: torch.Generator,
) -> _Batch:
    """The batch, then a copy of its first ``search_rows`` share with searches in it.

    The searches are added examples, never taken from the clicks: every window still
    teaches the next click from its whole history, as the model without the language model
    learns it (showing a share of the events themselves as searches cost the next click on
    the temporal backtest), and the copies teach the search (:func:`_as_searches`).
    """
    copy = slice(0, max(1, round(len(batch.targets) * config.search_rows)))
    item_ids, event_types, queries, search = _as_searches(
        ranker,
        batch.item_ids[copy],
        batch.event_types[copy],
        (batch.queries[copy], batch.search[copy]),
        batch.targets[copy],
        text,
        config,
        generator,
    )
    excluded = batch.excluded
    return _Batch(
        item_ids=torch.cat([batch.item_ids, item_ids]),
        event_types=torch.cat([batch.event_types, event_types]),
        queries=torch.cat([batch.queries, queries]),
        search=torch.cat([batch.search, search]),
        targets=torch.cat([batch.targets, batch.targets[copy]]),
        days=torch.cat([batch.days, batch.days[copy]]),
        excluded=None if excluded is None else torch.cat([excluded, excluded[copy]]),
    )


def _as_searches(
    ranker: SequenceRanker,
    item_ids: torch.Tensor,
    event_types: torch.Tensor,
    queries: tuple[torch.Tensor, torch.Tensor],
    targets: torch.Tensor,
    text: _Text,
    config: TrainConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Show some events as searches (item unknown, query vectors given).

    A share of the events before a click (``found_rate``) become a search for the item
    clicked next, as a shop's users search for an item and then open it: what teaches a
    search to rank the item it names (new items included), and, over the positions after
    it, how fast the search stops counting. Each query is one of the item's query
    families, drawn per search; held-out items are never searched for. (A click shown as a
    search for its own item would teach the opposite: its item is excluded from then on,
    so the search would boost only its neighbours, never the item clicked next.) Returns
    item ids, event types, ranker-space and search vectors.
    """
    draw = torch.rand(event_types.shape, generator=generator)
    pick = (event_types > 0) & (targets > 0) & (draw < config.found_rate)
    pick &= text.searchable[targets]
    family = torch.randint(len(text.searches), event_types.shape, generator=generator)
    chosen = text.searches[family[pick], targets[pick]]
    taste, search = (q.clone() for q in queries)
    taste[pick] = ranker.project_text(chosen)
    search[pick] = ranker.search_vectors(chosen)
    return (
        item_ids.masked_fill(pick, 0),
        event_types.masked_fill(pick, SEARCH),
        taste,
        search,
    )
